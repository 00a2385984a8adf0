//! TensorBoard event files (`events.out.tfevents.*`), written directly: protobuf `Event`s in
//! TFRecord framing. Scalars and PNG images only, which is all training logs.
//!
//! A record is `u64 len | u32 masked_crc(len bytes) | data | u32 masked_crc(data)`, little-endian,
//! with CRC-32C (Castagnoli, not the IEEE CRC-32). The first record carries
//! `file_version: "brain.Event:2"`. TensorBoard migrates the legacy `simple_value` and `image`
//! summary values to its scalar and image plugins, so no plugin metadata is needed.
//!
//! Event files are append-only logs read while they grow, so they are not written atomically;
//! a crash loses only records not yet flushed.

use crate::{Error, Result};
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where training logs scalars and images.
pub trait SummaryWriter {
    fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()>;
    /// An RGB image as interleaved HWC u8 (`rgb_hwc.len() == height * width * 3`).
    fn image(
        &mut self,
        tag: &str,
        step: i64,
        rgb_hwc: &[u8],
        height: usize,
        width: usize,
    ) -> Result<()>;
    fn flush(&mut self) -> Result<()>;
}

/// The messages of `tensorboard/compat/proto/{event,summary}.proto`, only the fields used here.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(oneof = "What", tags = "3, 5")]
        pub what: Option<What>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(Summary),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(oneof = "Kind", tags = "2, 4")]
        pub value: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(Image),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grayscale, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        /// A complete PNG file.
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }
}

/// TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its checksum, the payload, the payload's checksum.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch, the `wall_time` of each event.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Gives each event's wall time in Unix seconds (injectable for tests).
pub type Clock = Box<dyn FnMut() -> f64 + Send>;

/// Writes events into any `Write`; [`EventWriter::create`] gives the usual file in a log folder.
pub struct EventWriter<W: Write> {
    out: W,
    /// Names the destination in errors.
    path: PathBuf,
    clock: Clock,
}

impl EventWriter<BufWriter<File>> {
    /// Creates `log_dir` if needed and a new `events.out.tfevents.<unix_secs>.<hostname>` in it
    /// (with a `.N` suffix if that name exists: a resumed run adds a file, never truncates one).
    pub fn create(log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir).map_err(|e| Error::io(log_dir, e))?;
        let base = format!("events.out.tfevents.{}.{}", unix_time() as u64, hostname());
        let mut n = 0;
        loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = log_dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => return EventWriter::new(BufWriter::new(f), path, Box::new(unix_time)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
}

impl<W: Write> EventWriter<W> {
    /// Starts an event stream in `out` (writing the file-version record). `path` only names
    /// the destination in errors; `clock` gives each event's wall time in Unix seconds.
    pub fn new(out: W, path: impl Into<PathBuf>, clock: Clock) -> Result<Self> {
        let mut w = EventWriter { out, path: path.into(), clock };
        w.write_event(0, proto::What::FileVersion("brain.Event:2".into()))?;
        Ok(w)
    }

    /// The destination's path (or label).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_event(&mut self, step: i64, what: proto::What) -> Result<()> {
        let event = proto::Event { wall_time: (self.clock)(), step, what: Some(what) };
        let record = frame_record(&event.encode_to_vec());
        self.out.write_all(&record).map_err(|e| Error::io(&self.path, e))
    }

    fn write_value(&mut self, step: i64, tag: &str, value: proto::Kind) -> Result<()> {
        let summary =
            proto::Summary { value: vec![proto::Value { tag: tag.into(), value: Some(value) }] };
        self.write_event(step, proto::What::Summary(summary))
    }
}

impl<W: Write> SummaryWriter for EventWriter<W> {
    /// Stored as f32, TensorBoard's scalar type.
    fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        self.write_value(step, tag, proto::Kind::SimpleValue(value as f32))
    }

    fn image(
        &mut self,
        tag: &str,
        step: i64,
        rgb_hwc: &[u8],
        height: usize,
        width: usize,
    ) -> Result<()> {
        use image::ImageEncoder;
        let bad = |msg: String| Error::data(&self.path, format!("image {tag:?}: {msg}"));
        if rgb_hwc.len() != height * width * 3 {
            return Err(bad(format!("{} bytes for {height}x{width} RGB", rgb_hwc.len())));
        }
        let (h, w) = match (i32::try_from(height), i32::try_from(width)) {
            (Ok(h), Ok(w)) => (h, w),
            _ => return Err(bad(format!("{height}x{width} is too large"))),
        };
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(rgb_hwc, w as u32, h as u32, image::ExtendedColorType::Rgb8)
            .map_err(|e| bad(format!("PNG encoding failed: {e}")))?;
        let img = proto::Image { height: h, width: w, colorspace: 3, encoded_image_string: png };
        self.write_value(step, tag, proto::Kind::Image(img))
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// This machine's name for the file name (TensorBoard shows it), without path separators.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_masking_golden() {
        // The standard CRC-32C check value, then TFRecord's masking of it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xe306_9283u32.rotate_right(15) + 0xa282_ead8);
    }

    #[test]
    fn record_framing_golden() {
        // From TensorBoard's own writer (tensorboard 2.21):
        //   from tensorboard.summary.writer.record_writer import RecordWriter
        //   b = io.BytesIO(); RecordWriter(b).write(b"hello tfrecord"); b.getvalue().hex()
        let want = "0e00000000000000c5e5693f68656c6c6f2074667265636f72649f5b7622";
        let got: String =
            frame_record(b"hello tfrecord").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn first_record_is_the_file_version_event() {
        // event_pb2.Event(wall_time=1.5, file_version="brain.Event:2").SerializeToString().hex()
        let w = EventWriter::new(Vec::new(), "mem", Box::new(|| 1.5)).unwrap();
        let bytes = w.into_inner();
        let payload = hex("09000000000000f83f1a0d627261696e2e4576656e743a32");
        assert_eq!(bytes, frame_record(&payload));
        assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), payload.len() as u64);
    }

    #[test]
    fn scalar_record_golden() {
        // From TensorBoard's protobufs and writer (tensorboard 2.21):
        //   e = event_pb2.Event(wall_time=2.5, step=7, summary=summary_pb2.Summary(
        //       value=[summary_pb2.Summary.Value(tag="train/loss", simple_value=0.25)]))
        //   b = io.BytesIO(); RecordWriter(b).write(e.SerializeToString()); b.getvalue().hex()
        let want = "200000000000000029eda95009000000000000044010072a130a110a0a747261696e2f\
                    6c6f7373150000803e083ded8e";
        let mut w = EventWriter::new(Vec::new(), "mem", Box::new(|| 2.5)).unwrap();
        let header_len = w.out.len();
        w.scalar("train/loss", 7, 0.25).unwrap();
        let got: String = w.into_inner()[header_len..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn events_decode_back() {
        let mut t = 10.0;
        let clock = Box::new(move || {
            t += 1.0;
            t
        });
        let mut w = EventWriter::new(Vec::new(), "mem", clock).unwrap();
        w.scalar("train/loss", 7, 0.25).unwrap();
        w.image("val/sample_0", 7, &[255, 0, 0, 0, 255, 0], 1, 2).unwrap();
        let bytes = w.into_inner();
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let data = &rest[12..12 + len];
            let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            events.push(proto::Event::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        assert_eq!(events.len(), 3);
        assert_eq!((events[1].wall_time, events[1].step), (12.0, 7));
        let Some(proto::What::Summary(s)) = &events[1].what else { panic!() };
        assert_eq!(s.value[0].tag, "train/loss");
        assert_eq!(s.value[0].value, Some(proto::Kind::SimpleValue(0.25)));
        let Some(proto::What::Summary(s)) = &events[2].what else { panic!() };
        let Some(proto::Kind::Image(img)) = &s.value[0].value else { panic!() };
        assert_eq!((img.height, img.width, img.colorspace), (1, 2, 3));
        assert_eq!(&img.encoded_image_string[1..4], b"PNG");
    }

    #[test]
    fn errors_are_returned_not_panicked() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("disk full"))
            }
        }
        let e = EventWriter::new(Broken, "runs/x", Box::new(|| 0.0)).err().unwrap();
        assert!(e.to_string().contains("runs/x") && e.to_string().contains("disk full"), "{e}");
        let mut w = EventWriter::new(Vec::new(), "mem", Box::new(|| 0.0)).unwrap();
        let e = w.image("img", 0, &[0; 5], 1, 2).unwrap_err().to_string();
        assert!(e.contains("img") && e.contains("5 bytes"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = EventWriter::create(file.path()).err().unwrap().to_string();
        assert!(e.contains(&file.path().display().to_string()), "{e}");
    }

    #[test]
    fn create_never_reuses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents.") && !name.contains('/'), "{name}");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
