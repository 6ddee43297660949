//! What the exported schedules run on: the ECS (Fargate) task definition with the container
//! `runner`, its log group, the task role with the least-privilege policy derived from
//! [`crate::aws::OPERATIONS`], the execution role, and the role EventBridge Scheduler assumes.
//! `render::cloudformation` puts them in one stack with the schedules.
//!
//! The image carries `jobs/`, `sql/`, `schemas/`, `scheduler/` and the model declaration (see
//! the Dockerfile); the task's environment points it at the warehouse, the sources, the Glue
//! catalog and Athena (`RUNNER__*` overrides of the baked `runner.toml`).

use serde_json::{Map, Value, json};

use crate::aws::{OPERATIONS, Scope};
use crate::config::Config;

/// `s3://bucket/prefix/` as bucket and prefix.
fn s3_parts(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_string(), prefix.to_string()))
}

fn param(description: &str, default: Option<String>) -> Value {
    let mut p = json!({"Type": "String", "Description": description});
    if let Some(d) = default {
        p["Default"] = json!(d);
    }
    p
}

/// The stream's parameter name: `companies` -> `CompaniesSourcePrefix`.
fn source_param(stream: &str) -> String {
    format!("{}SourcePrefix", crate::aws::cfn_logical_id(stream))
}

/// Parameters and conditions of the stack, defaults from `config` where it names AWS.
pub fn parameters(config: &Config) -> (Map<String, Value>, Value) {
    let mut p = Map::new();
    let wh = s3_parts(&config.warehouse);
    p.insert("Image".into(), param("The runner image (`make image`, pushed to ECR): REPOSITORY:TAG", None));
    p.insert(
        "Cpu".into(),
        json!({"Type": "String", "Default": "1024", "AllowedValues": ["256", "512", "1024", "2048", "4096", "8192", "16384"],
               "Description": "Fargate CPU units of the task (1024 = 1 vCPU)"}),
    );
    p.insert("Memory".into(), json!({"Type": "String", "Default": "4096", "Description": "Fargate memory of the task in MiB (within what the CPU allows)"}));
    p.insert(
        "LogRetentionDays".into(),
        json!({"Type": "Number", "Default": 30, "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653],
               "Description": "Days the runner's logs are kept"}),
    );
    p.insert("ClusterArn".into(), param("ECS cluster running the runner task", None));
    p.insert("Subnets".into(), json!({"Type": "List<AWS::EC2::Subnet::Id>"}));
    p.insert("SecurityGroups".into(), json!({"Type": "List<AWS::EC2::SecurityGroup::Id>"}));
    p.insert(
        "WarehouseBucket".into(),
        param("Bucket of the warehouse (tables, catalog, ledger)", wh.as_ref().map(|w| w.0.clone())),
    );
    p.insert(
        "WarehousePrefix".into(),
        param(
            "Prefix of the warehouse in its bucket, ending in / (empty: the whole bucket)",
            Some(wh.map(|w| w.1).unwrap_or_default()),
        ),
    );
    let sources: Vec<(String, Option<(String, String)>)> = config.sources.iter().map(|(k, v)| (k.clone(), s3_parts(v))).collect();
    p.insert(
        "SourcesBucket".into(),
        param("Bucket Firehose delivers the drops to", sources.iter().find_map(|(_, s)| s.as_ref().map(|s| s.0.clone()))),
    );
    for (stream, s) in &sources {
        p.insert(
            source_param(stream),
            param(
                &format!("Prefix of the `{stream}` delivery stream's drops (the folder holding YYYY/MM/DD/HH/), ending in /"),
                Some(s.as_ref().map(|s| s.1.clone()).unwrap_or_else(|| format!("raw/{stream}/"))),
            ),
        );
    }
    p.insert("GlueDatabase".into(), param("Glue database of the tables", Some(config.catalog.database.clone())));
    p.insert(
        "AthenaWorkGroup".into(),
        param("Athena workgroup of `runner query --engine athena`", Some(config.athena.workgroup.clone())),
    );
    p.insert(
        "AthenaResultsBucket".into(),
        param(
            "Bucket Athena writes query results to (empty: Athena is not used)",
            Some(config.athena.output_location.as_deref().and_then(s3_parts).map(|s| s.0).unwrap_or_default()),
        ),
    );
    p.insert(
        "SageMakerEndpointName".into(),
        param(
            "SageMaker endpoint of the churn model (empty: not used)",
            Some(config.scoring.endpoint_name.clone().unwrap_or_default()),
        ),
    );
    p.insert(
        "ApiGatewayApiId".into(),
        param("Id of the API Gateway API signed with SigV4 (empty: not used)", Some(String::new())),
    );
    let conditions = json!({
        "UsesAthena": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AthenaResultsBucket"}, ""]}]},
        "UsesSageMaker": {"Fn::Not": [{"Fn::Equals": [{"Ref": "SageMakerEndpointName"}, ""]}]},
        "UsesApiGateway": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiGatewayApiId"}, ""]}]},
    });
    (p, conditions)
}

fn sub(s: &str) -> Value {
    json!({"Fn::Sub": s})
}

/// The actions of [`OPERATIONS`] in `scope` that act on objects (or, `bucket`, on the bucket).
fn actions(scope: Scope, bucket_level: bool) -> Vec<&'static str> {
    let mut a: Vec<&'static str> = OPERATIONS
        .iter()
        .filter(|o| o.scope == scope)
        .filter(|o| {
            !o.action.starts_with("s3:") || (o.action == "s3:ListBucket" || o.action == "s3:GetBucketLocation") == bucket_level
        })
        .map(|o| o.action)
        .collect();
    a.sort();
    a.dedup();
    a
}

/// The task role's policy: each statement grants the actions of [`OPERATIONS`] on their scope's
/// resources, nothing else; the optional endpoints only when their parameter is set.
pub fn task_policy(streams: &[String]) -> Value {
    let source_prefixes: Vec<Value> = streams.iter().map(|s| sub(&format!("${{{}}}*", source_param(s)))).collect();
    let source_objects: Vec<Value> = streams
        .iter()
        .map(|s| sub(&format!("arn:${{AWS::Partition}}:s3:::${{SourcesBucket}}/${{{}}}*", source_param(s))))
        .collect();
    let when = |cond: &str, statement: Value| json!({"Fn::If": [cond, statement, {"Ref": "AWS::NoValue"}]});
    let statements = vec![
        json!({"Sid": "WarehouseObjects", "Effect": "Allow", "Action": actions(Scope::Warehouse, false),
               "Resource": sub("arn:${AWS::Partition}:s3:::${WarehouseBucket}/${WarehousePrefix}*")}),
        json!({"Sid": "WarehouseListing", "Effect": "Allow", "Action": actions(Scope::Warehouse, true),
               "Resource": sub("arn:${AWS::Partition}:s3:::${WarehouseBucket}"),
               "Condition": {"StringLike": {"s3:prefix": [sub("${WarehousePrefix}*")]}}}),
        json!({"Sid": "SourceObjects", "Effect": "Allow", "Action": actions(Scope::Sources, false), "Resource": source_objects}),
        json!({"Sid": "SourceListing", "Effect": "Allow", "Action": actions(Scope::Sources, true),
               "Resource": sub("arn:${AWS::Partition}:s3:::${SourcesBucket}"),
               "Condition": {"StringLike": {"s3:prefix": source_prefixes}}}),
        json!({"Sid": "GlueCatalog", "Effect": "Allow", "Action": actions(Scope::Glue, false), "Resource": [
            sub("arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"),
            sub("arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:database/${GlueDatabase}"),
            sub("arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:table/${GlueDatabase}/*"),
        ]}),
        when(
            "UsesAthena",
            json!({"Sid": "AthenaQueries", "Effect": "Allow", "Action": actions(Scope::AthenaWorkGroup, false),
            "Resource": sub("arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:workgroup/${AthenaWorkGroup}")}),
        ),
        when(
            "UsesAthena",
            json!({"Sid": "AthenaResultObjects", "Effect": "Allow", "Action": actions(Scope::AthenaResults, false),
            "Resource": sub("arn:${AWS::Partition}:s3:::${AthenaResultsBucket}/*")}),
        ),
        when(
            "UsesAthena",
            json!({"Sid": "AthenaResultBucket", "Effect": "Allow", "Action": actions(Scope::AthenaResults, true),
            "Resource": sub("arn:${AWS::Partition}:s3:::${AthenaResultsBucket}")}),
        ),
        when(
            "UsesSageMaker",
            json!({"Sid": "ChurnModel", "Effect": "Allow", "Action": actions(Scope::SageMakerEndpoint, false),
            "Resource": sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/${SageMakerEndpointName}")}),
        ),
        when(
            "UsesApiGateway",
            json!({"Sid": "ChurnApi", "Effect": "Allow", "Action": actions(Scope::ApiGateway, false),
            "Resource": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${ApiGatewayApiId}/*")}),
        ),
    ];
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// A role `service` assumes, with one inline policy.
fn role(description: &str, service: &str, policy_name: &str, policy: Value) -> Value {
    json!({"Type": "AWS::IAM::Role", "Properties": {
        "Description": description,
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": policy_name, "PolicyDocument": policy}],
    }})
}

/// The task definition, its roles and log group, and the scheduler's role.
pub fn resources(config: &Config) -> Map<String, Value> {
    let streams: Vec<String> = config.sources.keys().cloned().collect();
    let mut environment = vec![
        json!({"Name": "RUNNER__WAREHOUSE", "Value": sub("s3://${WarehouseBucket}/${WarehousePrefix}")}),
        json!({"Name": "RUNNER__CATALOG__KIND", "Value": "glue"}),
        json!({"Name": "RUNNER__CATALOG__DATABASE", "Value": {"Ref": "GlueDatabase"}}),
        json!({"Name": "RUNNER__ATHENA__WORKGROUP", "Value": {"Ref": "AthenaWorkGroup"}}),
        json!({"Name": "AWS_REGION", "Value": {"Ref": "AWS::Region"}}),
    ];
    for s in &streams {
        environment.push(json!({
            "Name": format!("RUNNER__SOURCES__{}__URL", s.to_ascii_uppercase()),
            "Value": sub(&format!("s3://${{SourcesBucket}}/${{{}}}", source_param(s))),
        }));
    }
    let mut r = Map::new();
    r.insert(
        "RunnerLogGroup".into(),
        json!({"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": sub("/ecs/runner-${AWS::StackName}"), "RetentionInDays": {"Ref": "LogRetentionDays"}}}),
    );
    r.insert(
        "RunnerExecutionRole".into(),
        role("Pulls the runner image and writes its logs", "ecs-tasks.amazonaws.com", "runner-execution",
            json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "PullImage", "Effect": "Allow", "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                 "Resource": sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*")},
                {"Sid": "EcrToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
                {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": {"Fn::Sub": "${RunnerLogGroup.Arn}"}},
            ]})),
    );
    r.insert(
        "RunnerTaskRole".into(),
        role(
            "What the runner's code calls: S3 (sources read, warehouse read/write), Glue, Athena, the churn endpoint",
            "ecs-tasks.amazonaws.com",
            "runner",
            task_policy(&streams),
        ),
    );
    r.insert(
        "RunnerTaskDefinition".into(),
        json!({"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": "runner",
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": {"Ref": "Cpu"},
            "Memory": {"Ref": "Memory"},
            "RuntimePlatform": {"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"},
            "ExecutionRoleArn": {"Fn::GetAtt": ["RunnerExecutionRole", "Arn"]},
            "TaskRoleArn": {"Fn::GetAtt": ["RunnerTaskRole", "Arn"]},
            // The entrypoint, user and working folder are the image's own (Dockerfile):
            // stated here too, so a task never runs another image's way by accident
            // (`tests/image.rs` checks the two agree).
            "ContainerDefinitions": [{
                "Name": "runner",
                "Image": {"Ref": "Image"},
                "Essential": true,
                "EntryPoint": ["runner"],
                "Command": ["status"],
                "User": "runner",
                "WorkingDirectory": "/app",
                "Environment": environment,
                "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                    "awslogs-group": {"Ref": "RunnerLogGroup"},
                    "awslogs-region": {"Ref": "AWS::Region"},
                    "awslogs-stream-prefix": "runner",
                }},
            }],
        }}),
    );
    r.insert(
        "RunnerSchedulerRole".into(),
        role(
            "EventBridge Scheduler starts the runner's task",
            "scheduler.amazonaws.com",
            "runner-scheduler",
            json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "RunTask", "Effect": "Allow", "Action": ["ecs:RunTask"], "Resource": {"Ref": "RunnerTaskDefinition"},
                 "Condition": {"ArnLike": {"ecs:cluster": {"Ref": "ClusterArn"}}}},
                {"Sid": "PassRoles", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": [
                    {"Fn::GetAtt": ["RunnerTaskRole", "Arn"]}, {"Fn::GetAtt": ["RunnerExecutionRole", "Arn"]}]},
            ]}),
        ),
    );
    r
}
