//! A GGUF file's header, read in pure Rust (the supervisor never links
//! llama.cpp): the metadata key/values and the tensor shapes, never the weights.
//!
//! The format (GGUF v2 and v3, little-endian): `GGUF`, version `u32`, tensor
//! count `u64`, key/value count `u64`, the key/values (`string key`, `u32`
//! type, value), then one info per tensor (`string name`, `u32` dims, `u64`
//! per dim, `u32` type, `u64` offset). Strings are a `u64` length and UTF-8
//! bytes. Arrays are read past, keeping only their length and element type
//! (a vocabulary is a 100k-string array nobody asked for); scalars and
//! strings are kept. Every count and length is bounded before anything is
//! allocated, so a hostile or truncated file is an error, never an OOM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Longest string value kept (chat templates are a few KiB; 16 MiB is plenty).
const MAX_STRING: u64 = 16 << 20;
/// Most key/values and tensors a header may declare.
const MAX_ENTRIES: u64 = 1 << 24;
/// Most dimensions of one tensor (ggml has 4).
const MAX_DIMS: u32 = 8;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// An array: its element type (GGUF's number) and length; the items are skipped.
    Array {
        item_type: u32,
        len: u64,
    },
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// What a GGUF header says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    pub version: u32,
    /// Every key/value, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Weights in all tensors (the product of each tensor's dimensions, summed).
    pub parameters: u64,
    pub tensors: u64,
    /// Each tensor's name and data offset, in file order.
    pub tensor_infos: Vec<TensorInfo>,
    /// Where the tensor data starts: the header's end, aligned to
    /// `general.alignment` (32 by default).
    pub data_offset: u64,
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's type number.
    pub ggml_type: u32,
    /// Offset of its data from [`Header::data_offset`].
    pub offset: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// `general.architecture` (`llama`, `qwen2`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `<arch>.<suffix>`, e.g. `context_length`.
    pub fn arch_value(&self, suffix: &str) -> Option<&Value> {
        self.get(&format!("{}.{suffix}", self.architecture()?))
    }

    /// The chat template (`tokenizer.chat_template`).
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template").and_then(Value::as_str)
    }

    /// Each tensor's size in bytes, `(name, bytes)`, from the gaps between
    /// data offsets (each includes its alignment padding, under 32 bytes);
    /// the last one ends at `file_len`. Exact without a table of ggml's types.
    pub fn tensor_bytes(&self, file_len: u64) -> Vec<(&str, u64)> {
        let mut by_offset: Vec<&TensorInfo> = self.tensor_infos.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        let data_len = file_len.saturating_sub(self.data_offset);
        by_offset
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let end = by_offset.get(i + 1).map_or(data_len, |next| next.offset);
                (t.name.as_str(), end.saturating_sub(t.offset))
            })
            .collect()
    }

    /// What the memory estimate needs ([`crate::policy::memory`]): the
    /// dimensions from the metadata and the tensors' bytes by layer.
    /// `file_len` is the GGUF's size (the last tensor ends there).
    pub fn memory_shape(&self, file_len: u64) -> crate::policy::memory::ModelShape {
        use crate::policy::memory::{ModelShape, Swa};
        let num = |suffix: &str| self.arch_value(suffix).and_then(Value::as_u64);
        let n_layer = num("block_count").unwrap_or(0);
        let n_embd = num("embedding_length").unwrap_or(0);
        let n_head = num("attention.head_count").unwrap_or(1).max(1);
        // Per-layer arrays (a few architectures) are skipped by the reader:
        // fall back to one KV head per query head, the larger figure.
        let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head);
        let head_k = num("attention.key_length").unwrap_or(n_embd / n_head);
        let head_v = num("attention.value_length").unwrap_or(n_embd / n_head);
        let n_vocab = num("vocab_size")
            .or_else(|| match self.get("tokenizer.ggml.tokens") {
                Some(Value::Array { len, .. }) => Some(*len),
                _ => None,
            })
            .unwrap_or(0);
        // llama.cpp sets the interleaving per architecture, not in the GGUF.
        let swa = num("attention.sliding_window").and_then(|window| {
            let pattern = match self.architecture()? {
                "gemma2" | "gpt-oss" => 2,
                "cohere2" => 4,
                "gemma3" | "gemma3n" => 6,
                _ => return None,
            };
            Some(Swa { window, pattern })
        });
        let mut shape = ModelShape {
            n_layer: n_layer as u32,
            n_embd,
            n_ff: num("feed_forward_length").unwrap_or(4 * n_embd),
            n_vocab,
            n_embd_k: head_k * n_head_kv,
            n_embd_v: head_v * n_head_kv,
            swa,
            layer_bytes: vec![0; n_layer as usize],
            ..ModelShape::default()
        };
        let mut has_output = false;
        let mut token_embd = 0;
        for (name, bytes) in self.tensor_bytes(file_len) {
            let layer = name
                .strip_prefix("blk.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok());
            match layer {
                Some(il) if il < shape.layer_bytes.len() => shape.layer_bytes[il] += bytes,
                _ if name.starts_with("output") => {
                    has_output |= name == "output.weight";
                    shape.output_bytes += bytes;
                }
                _ => {
                    if name == "token_embd.weight" {
                        token_embd = bytes;
                    }
                    shape.other_bytes += bytes;
                }
            }
        }
        if !has_output {
            shape.tied_output_bytes = token_embd;
        }
        shape
    }

    /// The quantization of the weights, from `general.file_type` (llama.cpp's
    /// `llama_ftype`), as Ollama names it (`Q4_K_M`, `F16`, …).
    pub fn quantization(&self) -> Option<&'static str> {
        file_type_name(self.get("general.file_type")?.as_u64()?)
    }
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (magic {0:?})")]
    Magic([u8; 4]),
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("malformed GGUF header: {0}")]
    Malformed(String),
}

/// Reads the header of the GGUF at `path`.
///
/// # Errors
/// [`GgufError`] for an unreadable, truncated or malformed file.
pub fn read(path: &Path) -> Result<Header, GgufError> {
    let file = std::fs::File::open(path)?;
    parse(&mut BufReader::with_capacity(1 << 16, file))
}

/// The memory-estimate shape of the GGUF at `path` (`None` when unreadable).
pub fn shape_of(path: &Path) -> Option<crate::policy::memory::ModelShape> {
    let file_len = std::fs::metadata(path).ok()?.len();
    Some(read(path).ok()?.memory_shape(file_len))
}

/// Reads a GGUF header from `r` (see the module docs).
///
/// # Errors
/// As [`read`].
pub fn parse(r: &mut impl BufRead) -> Result<Header, GgufError> {
    let mut counted = Counted { inner: r, read: 0 };
    let mut header = parse_counted(&mut counted)?;
    let align = header
        .get("general.alignment")
        .and_then(Value::as_u64)
        .filter(|a| *a > 0)
        .unwrap_or(32);
    header.data_offset = counted.read.div_ceil(align) * align;
    Ok(header)
}

/// A reader that counts the bytes taken from it (the header's length).
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.read += amt as u64;
        self.inner.consume(amt);
    }
}

fn parse_counted(r: &mut impl BufRead) -> Result<Header, GgufError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Err(GgufError::Magic(magic));
    }
    let version = u32_le(r)?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensors = bounded(u64_le(r)?, MAX_ENTRIES, "tensor count")?;
    let kvs = bounded(u64_le(r)?, MAX_ENTRIES, "key/value count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kvs {
        let key = string(r)?;
        let kind = u32_le(r)?;
        metadata.insert(key, value(r, kind)?);
    }
    let mut parameters: u64 = 0;
    let mut tensor_infos = Vec::with_capacity(tensors.min(1 << 16) as usize);
    for _ in 0..tensors {
        let name = string(r)?;
        let dims = u32_le(r)?;
        if dims > MAX_DIMS {
            return Err(GgufError::Malformed(format!(
                "a tensor has {dims} dimensions"
            )));
        }
        let mut count: u64 = 1;
        for _ in 0..dims {
            count = count.saturating_mul(u64_le(r)?);
        }
        parameters = parameters.saturating_add(count);
        let ggml_type = u32_le(r)?;
        let offset = u64_le(r)?;
        tensor_infos.push(TensorInfo {
            name,
            ggml_type,
            offset,
        });
    }
    Ok(Header {
        version,
        metadata,
        parameters,
        tensors,
        tensor_infos,
        data_offset: 0,
    })
}

fn bounded(n: u64, max: u64, what: &str) -> Result<u64, GgufError> {
    match n <= max {
        true => Ok(n),
        false => Err(GgufError::Malformed(format!("{what} {n} is too large"))),
    }
}

fn value(r: &mut impl BufRead, kind: u32) -> Result<Value, GgufError> {
    Ok(match kind {
        0 => Value::Uint(u64::from(bytes::<1>(r)?[0])),
        1 => Value::Int(i64::from(i8::from_le_bytes(bytes(r)?))),
        2 => Value::Uint(u64::from(u16::from_le_bytes(bytes(r)?))),
        3 => Value::Int(i64::from(i16::from_le_bytes(bytes(r)?))),
        4 => Value::Uint(u64::from(u32_le(r)?)),
        5 => Value::Int(i64::from(i32::from_le_bytes(bytes(r)?))),
        6 => Value::Float(f64::from(f32::from_le_bytes(bytes(r)?))),
        7 => Value::Bool(bytes::<1>(r)?[0] != 0),
        8 => Value::String(string(r)?),
        9 => {
            let item_type = u32_le(r)?;
            let len = bounded(u64_le(r)?, u64::MAX / 16, "array length")?;
            skip_array(r, item_type, len)?;
            Value::Array { item_type, len }
        }
        10 => Value::Uint(u64_le(r)?),
        11 => Value::Int(i64::from_le_bytes(bytes(r)?)),
        12 => Value::Float(f64::from_le_bytes(bytes(r)?)),
        other => return Err(GgufError::Malformed(format!("unknown value type {other}"))),
    })
}

/// Byte size of one item of a fixed-size type.
fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn skip_array(r: &mut impl BufRead, item_type: u32, len: u64) -> Result<(), GgufError> {
    if let Some(size) = fixed_size(item_type) {
        return skip(r, len.saturating_mul(size));
    }
    for _ in 0..len {
        match item_type {
            8 => skip_string(r)?,
            9 => {
                let inner = u32_le(r)?;
                let n = u64_le(r)?;
                skip_array(r, inner, n)?;
            }
            other => return Err(GgufError::Malformed(format!("unknown array type {other}"))),
        }
    }
    Ok(())
}

fn skip(r: &mut impl BufRead, n: u64) -> Result<(), GgufError> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied < n {
        return Err(GgufError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

fn string(r: &mut impl BufRead) -> Result<String, GgufError> {
    let len = bounded(u64_le(r)?, MAX_STRING, "string length")?;
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|_| GgufError::Malformed("a string is not UTF-8".into()))
}

fn skip_string(r: &mut impl BufRead) -> Result<(), GgufError> {
    let len = u64_le(r)?;
    skip(r, len)
}

fn bytes<const N: usize>(r: &mut impl Read) -> Result<[u8; N], GgufError> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn u32_le(r: &mut impl Read) -> Result<u32, GgufError> {
    Ok(u32::from_le_bytes(bytes(r)?))
}

fn u64_le(r: &mut impl Read) -> Result<u64, GgufError> {
    Ok(u64::from_le_bytes(bytes(r)?))
}

/// llama.cpp's `llama_ftype` numbers, named as Ollama shows them.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => return None,
    })
}

/// A GGUF header writer, for tests here and in `api/`.
#[cfg(test)]
pub(crate) mod test_writer {
    /// A GGUF header writer, for tests.
    #[derive(Default)]
    pub struct Writer {
        kvs: Vec<u8>,
        n_kv: u64,
        tensors: Vec<u8>,
        n_tensors: u64,
    }

    pub fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Writer {
        pub fn kv(mut self, key: &str, kind: u32, value: &[u8]) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend(kind.to_le_bytes());
            self.kvs.extend(value);
            self.n_kv += 1;
            self
        }
        pub fn string(self, key: &str, v: &str) -> Self {
            let mut b = Vec::new();
            put_str(&mut b, v);
            self.kv(key, 8, &b)
        }
        pub fn tensor(mut self, name: &str, dims: &[u64]) -> Self {
            put_str(&mut self.tensors, name);
            self.tensors.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.tensors.extend(d.to_le_bytes());
            }
            self.tensors.extend(0u32.to_le_bytes());
            self.tensors.extend(0u64.to_le_bytes());
            self.n_tensors += 1;
            self
        }
        pub fn bytes(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kvs);
            out.extend(&self.tensors);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::{put_str, Writer};
    use super::*;

    fn sample() -> Writer {
        let mut tokens = 8u32.to_le_bytes().to_vec();
        tokens.extend(2u64.to_le_bytes());
        put_str(&mut tokens, "<s>");
        put_str(&mut tokens, "hello");
        let mut scores = 6u32.to_le_bytes().to_vec();
        scores.extend(3u64.to_le_bytes());
        scores.extend([0u8; 12]);
        Writer::default()
            .string("general.architecture", "llama")
            .kv("llama.context_length", 4, &2048u32.to_le_bytes())
            .kv("general.file_type", 4, &15u32.to_le_bytes())
            .kv("tokenizer.ggml.tokens", 9, &tokens)
            .kv("tokenizer.ggml.scores", 9, &scores)
            .kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
            .kv("x.flag", 7, &[1])
            .kv("x.neg", 5, &(-3i32).to_le_bytes())
            .string("tokenizer.chat_template", "{{ messages }}")
            .tensor("a", &[4, 3])
            .tensor("b", &[5])
    }

    #[test]
    fn a_header_gives_its_values_arrays_lengths_and_parameter_count() {
        let h = parse(&mut sample().bytes().as_slice()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.arch_value("context_length"), Some(&Value::Uint(2048)));
        assert_eq!(h.quantization(), Some("Q4_K_M"));
        assert_eq!(h.chat_template(), Some("{{ messages }}"));
        assert_eq!(
            h.get("tokenizer.ggml.tokens"),
            Some(&Value::Array {
                item_type: 8,
                len: 2
            })
        );
        assert_eq!(
            h.get("tokenizer.ggml.scores"),
            Some(&Value::Array {
                item_type: 6,
                len: 3
            })
        );
        assert_eq!(h.get("llama.rope.freq_base"), Some(&Value::Float(10000.0)));
        assert_eq!(h.get("x.flag"), Some(&Value::Bool(true)));
        assert_eq!(h.get("x.neg"), Some(&Value::Int(-3)));
        assert_eq!((h.tensors, h.parameters), (2, 17));
    }

    #[test]
    fn broken_headers_are_errors_at_every_cut() {
        let whole = sample().bytes();
        for cut in 0..whole.len() {
            let err = parse(&mut &whole[..cut]);
            assert!(err.is_err(), "a header cut at {cut} bytes parsed");
        }
        let mut bad = whole.clone();
        bad[0] = b'X';
        assert!(matches!(
            parse(&mut bad.as_slice()),
            Err(GgufError::Magic(_))
        ));
        let mut v1 = whole.clone();
        v1[4] = 1;
        assert!(matches!(
            parse(&mut v1.as_slice()),
            Err(GgufError::Version(1))
        ));
        let mut huge = whole;
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse(&mut huge.as_slice()),
            Err(GgufError::Malformed(_))
        ));
    }

    #[test]
    fn file_types_are_named_as_ollama_names_them() {
        let cases = [
            (0, Some("F32")),
            (1, Some("F16")),
            (3, Some("Q4_1")),
            (15, Some("Q4_K_M")),
            (18, Some("Q6_K")),
            (32, Some("BF16")),
            (4, None),
            (999, None),
        ];
        for (n, name) in cases {
            assert_eq!(file_type_name(n), name, "{n}");
        }
    }

    #[test]
    fn the_bundled_model_reads_as_a_small_llama() {
        let Some(path) = std::env::var_os("LLM_NODE_TEST_MODEL") else {
            eprintln!("LLM_NODE_TEST_MODEL not set: skipped");
            return;
        };
        let h = read(Path::new(&path)).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.quantization(), Some("Q4_1"));
        assert_eq!(
            h.arch_value("context_length").and_then(Value::as_u64),
            Some(8192)
        );
        assert!(
            (130_000_000..140_000_000).contains(&h.parameters),
            "{} parameters",
            h.parameters
        );
        assert!(h.chat_template().is_some_and(|t| t.contains("im_start")));
        assert!(
            matches!(h.get("tokenizer.ggml.tokens"), Some(Value::Array { len, .. }) if *len > 40_000)
        );
    }
}
