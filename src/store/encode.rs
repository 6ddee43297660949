//! The one Parquet encoder: every file the runner writes (event partitions, SQL job outputs,
//! scores, exports, run history, compacted partitions) is encoded here, so they all read the
//! same way in Athena, DuckDB and pyarrow.

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Parquet as Athena reads it: Snappy pages, statistics for pruning.
pub fn writer_properties() -> WriterProperties {
    builder().build()
}

fn builder() -> parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("runner {}", env!("CARGO_PKG_VERSION")))
}

/// Rows of a string column looked at to decide its encoding.
const SAMPLE_ROWS: usize = 2048;

/// [`writer_properties`] with dictionary encoding where it pays: a string column whose sample
/// repeats its values (tenant ids, event types, statuses). Not for a column of mostly distinct
/// values (event ids, job ids) nor for numbers and times: there a dictionary only costs a hash
/// of every value, and a dictionary page as large as the data, before the writer gives up on it
/// or keeps it. Statistics and types are the same either way.
pub fn writer_properties_for(batch: &RecordBatch) -> WriterProperties {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let mut b = builder().set_dictionary_enabled(false);
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let repeats = match field.data_type() {
            DataType::Utf8 => {
                let s = col.as_string::<i32>();
                let n = s.len().min(SAMPLE_ROWS);
                let seen: foldhash::HashSet<&str> = (0..n).filter(|i| s.is_valid(*i)).map(|i| s.value(i)).collect();
                seen.len() * 2 <= n
            }
            DataType::Dictionary(..) => true,
            _ => false,
        };
        if repeats {
            b = b.set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(field.name().as_str()), true);
        }
    }
    b.build()
}

/// One batch as a Parquet file ([`writer_properties_for`] it).
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = writer_properties_for(batch);
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(Error::parquet("opening a Parquet writer"))?;
    w.write(batch).map_err(Error::parquet("writing Parquet"))?;
    w.close().map_err(Error::parquet("closing Parquet"))?;
    Ok(Bytes::from(buf))
}
