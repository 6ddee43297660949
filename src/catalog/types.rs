//! One type map between Arrow and the catalog's Hive/Athena type names, for the local catalog,
//! Glue and Athena's results alike (they once disagreed on the timestamp's time zone).

use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// The Arrow type of a catalog `timestamp`: milliseconds, UTC.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Hive/Athena type for an Arrow type the runner writes.
pub fn glue_type(dt: &DataType) -> Result<String> {
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Int8 => "tinyint",
        DataType::Int16 => "smallint",
        DataType::Int32 => "int",
        DataType::Int64 => "bigint",
        DataType::Float32 => "float",
        DataType::Float64 => "double",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, _) => "timestamp",
        DataType::Binary | DataType::LargeBinary => "binary",
        DataType::Decimal128(p, s) => return Ok(format!("decimal({p},{s})")),
        other => return Err(Error::Internal(format!("no Athena type for Arrow type {other}"))),
    }
    .to_string())
}

/// The Arrow type the runner reads for a Hive/Athena type: the Glue names, and the Trino names
/// Athena's results use (`varchar`, `integer`, `real`).
pub fn arrow_type(ty: &str) -> Result<DataType> {
    Ok(match ty {
        "string" | "varchar" | "char" => DataType::Utf8,
        "tinyint" => DataType::Int8,
        "smallint" => DataType::Int16,
        "int" | "integer" => DataType::Int32,
        "bigint" => DataType::Int64,
        "float" | "real" => DataType::Float32,
        "double" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        // Every timestamp the runner writes is an instant in UTC (Parquet's `isAdjustedToUTC`);
        // Athena's `timestamp` has no zone and shows the same UTC wall time. So a timestamp
        // reads as UTC whether it comes from the warehouse or from Athena's results.
        "timestamp" => timestamp(),
        "binary" => DataType::Binary,
        t if t.starts_with("decimal(") => {
            let inner = t.trim_start_matches("decimal(").trim_end_matches(')');
            let (p, s) = inner.split_once(',').ok_or_else(|| Error::Internal(format!("bad type {t}")))?;
            DataType::Decimal128(
                p.trim().parse().map_err(|_| Error::Internal(format!("bad type {t}")))?,
                s.trim().parse().map_err(|_| Error::Internal(format!("bad type {t}")))?,
            )
        }
        other => return Err(Error::Internal(format!("catalog type `{other}` is not supported"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glue_types_round_trip() {
        for dt in [
            DataType::Utf8,
            DataType::Int64,
            DataType::Float64,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            DataType::Decimal128(12, 2),
        ] {
            assert_eq!(arrow_type(&glue_type(&dt).unwrap()).unwrap(), dt);
        }
        assert!(glue_type(&DataType::UInt64).is_err());
    }

    #[test]
    fn athena_result_names_map_to_the_same_types_and_timestamps_are_utc() {
        assert_eq!(arrow_type("varchar").unwrap(), arrow_type("string").unwrap());
        assert_eq!(arrow_type("integer").unwrap(), arrow_type("int").unwrap());
        assert_eq!(arrow_type("real").unwrap(), arrow_type("float").unwrap());
        assert_eq!(arrow_type("timestamp").unwrap(), DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
        assert!(arrow_type("map<string,int>").is_err());
    }
}
