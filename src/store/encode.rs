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
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("runner {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One batch as a Parquet file ([`writer_properties`]).
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = writer_properties();
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(Error::parquet("opening a Parquet writer"))?;
    w.write(batch).map_err(Error::parquet("writing Parquet"))?;
    w.close().map_err(Error::parquet("closing Parquet"))?;
    Ok(Bytes::from(buf))
}
