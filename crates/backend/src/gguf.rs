//! Reads a GGUF file's header (metadata and tensor table, never the weights) for what split
//! planning needs: the model's shape and how many bytes its layers and the rest weigh.
//!
//! A few dozen lines of a documented format rather than a crate: the GGUF crates on crates.io
//! parse far more (and allocate every string array), and llama.cpp's own parser is reachable
//! only by loading the model, which is what a node too small for it must not do. Every count
//! and length is bounded, so a truncated or hostile file is an error, never a huge allocation.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use infermesh_state::split_role::ModelShape;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_KEY: u64 = 64 * 1024;
const MAX_STRING: u64 = 16 * 1024 * 1024;
const MAX_ENTRIES: u64 = 1_000_000;
const MAX_DIMS: u32 = 8;
const DEFAULT_ALIGNMENT: u64 = 32;

/// The shape of the model in `path`, or why it cannot be read.
pub fn model_shape(path: &Path) -> Result<ModelShape, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut r = Reader(BufReader::new(file));
    read_shape(&mut r, len)
        .map_err(|e| format!("{} is not a readable GGUF file: {e}", path.display()))
}

struct Reader(BufReader<File>);

impl Reader {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.0
            .read_exact(&mut b)
            .map_err(|e| format!("truncated header ({e})"))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
    fn count(&mut self, what: &str) -> Result<u64, String> {
        let n = self.u64()?;
        if n > MAX_ENTRIES {
            return Err(format!("{n} {what} is more than any model has"));
        }
        Ok(n)
    }
    fn string(&mut self, max: u64) -> Result<String, String> {
        let n = self.u64()?;
        if n > max {
            return Err(format!("a {n}-byte string"));
        }
        let mut b = vec![0u8; n as usize];
        self.0
            .read_exact(&mut b)
            .map_err(|e| format!("truncated header ({e})"))?;
        String::from_utf8(b).map_err(|_| "a string that is not UTF-8".to_string())
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        let n = i64::try_from(n).map_err(|_| "a value past any file's end".to_string())?;
        self.0
            .seek_relative(n)
            .map_err(|e| format!("truncated header ({e})"))
    }
    fn pos(&mut self) -> Result<u64, String> {
        self.0.stream_position().map_err(|e| e.to_string())
    }
}

/// Size of a fixed-width value type; `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// One metadata value: integers are kept, an array's length is kept, the rest skipped.
enum Value {
    Int(u64),
    Text(String),
    Array(u64),
    Other,
}

fn read_value(r: &mut Reader, ty: u32) -> Result<Value, String> {
    Ok(match ty {
        0 | 7 => Value::Int(u64::from(r.bytes::<1>()?[0])),
        1 => Value::Int(r.bytes::<1>()?[0] as i8 as u64),
        2 => Value::Int(u64::from(u16::from_le_bytes(r.bytes()?))),
        3 => Value::Int(i16::from_le_bytes(r.bytes()?) as u64),
        4 => Value::Int(u64::from(r.u32()?)),
        5 => Value::Int(r.u32()? as i32 as u64),
        10 | 11 => Value::Int(r.u64()?),
        6 | 12 => {
            r.skip(fixed_size(ty).unwrap_or(0))?;
            Value::Other
        }
        8 => Value::Text(r.string(MAX_STRING)?),
        9 => {
            let item = r.u32()?;
            let n = r.count("array items")?;
            match fixed_size(item) {
                Some(size) => r.skip(n * size)?,
                None if item == 8 => {
                    for _ in 0..n {
                        let len = r.u64()?;
                        if len > MAX_STRING {
                            return Err(format!("a {len}-byte string"));
                        }
                        r.skip(len)?;
                    }
                }
                None => return Err(format!("an array of value type {item}")),
            }
            Value::Array(n)
        }
        other => return Err(format!("unknown value type {other}")),
    })
}

fn read_shape(r: &mut Reader, file_len: u64) -> Result<ModelShape, String> {
    if &r.bytes::<4>()? != MAGIC {
        return Err("no GGUF magic".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} (this build reads 2 and 3)"));
    }
    let n_tensors = r.count("tensors")?;
    let n_kv = r.count("metadata entries")?;
    let mut ints: HashMap<String, u64> = HashMap::new();
    let mut arch = String::new();
    let mut n_tokens = 0u64;
    for _ in 0..n_kv {
        let key = r.string(MAX_KEY)?;
        let ty = r.u32()?;
        match read_value(r, ty)? {
            Value::Int(v) => {
                ints.insert(key, v);
            }
            Value::Text(s) if key == "general.architecture" => arch = s,
            Value::Array(n) if key == "tokenizer.ggml.tokens" => n_tokens = n,
            _ => {}
        }
    }
    if arch.is_empty() {
        return Err("no general.architecture".into());
    }
    let mut tensors: Vec<(bool, u64)> = Vec::with_capacity(n_tensors.min(4096) as usize);
    for _ in 0..n_tensors {
        let name = r.string(MAX_KEY)?;
        let dims = r.u32()?;
        if dims > MAX_DIMS {
            return Err(format!("tensor {name} has {dims} dimensions"));
        }
        r.skip(8 * u64::from(dims))?;
        let _ty = r.u32()?;
        let offset = r.u64()?;
        tensors.push((name.starts_with("blk."), offset));
    }
    let align = match ints.get("general.alignment") {
        Some(&a) if a > 0 && a.is_power_of_two() => a,
        _ => DEFAULT_ALIGNMENT,
    };
    let data_start = r.pos()?.div_ceil(align) * align;
    let data_len = file_len
        .checked_sub(data_start)
        .ok_or("tensor data missing")?;
    // Each tensor's bytes run to the next one's offset (alignment padding included).
    tensors.sort_by_key(|&(_, off)| off);
    let (mut block_bytes, mut other_bytes) = (0u64, 0u64);
    for (i, &(block, off)) in tensors.iter().enumerate() {
        let end = tensors.get(i + 1).map_or(data_len, |&(_, next)| next);
        let size = end
            .checked_sub(off)
            .filter(|_| end <= data_len)
            .ok_or("tensor offsets past the end of the file")?;
        if block {
            block_bytes += size;
        } else {
            other_bytes += size;
        }
    }
    let get = |k: &str| ints.get(&format!("{arch}.{k}")).copied().unwrap_or(0);
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let n_head = get("attention.head_count");
    let shape = ModelShape {
        layers: narrow(get("block_count")),
        n_embd: narrow(get("embedding_length")),
        n_head: narrow(n_head),
        n_head_kv: narrow(match get("attention.head_count_kv") {
            0 => n_head,
            kv => kv,
        }),
        key_length: narrow(get("attention.key_length")),
        value_length: narrow(get("attention.value_length")),
        n_vocab: narrow(match get("vocab_size") {
            0 => n_tokens,
            v => v,
        }),
        block_bytes,
        other_bytes,
    };
    if shape.layers == 0 {
        return Err(format!("no {arch}.block_count"));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kv_u32(out: &mut Vec<u8>, key: &str, v: u32) {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(4u32.to_le_bytes());
        out.extend(v.to_le_bytes());
    }

    fn kv_str(out: &mut Vec<u8>, key: &str, v: &str) {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    fn tensor(out: &mut Vec<u8>, name: &str, offset: u64) {
        out.extend((name.len() as u64).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(16u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }

    /// A GGUF file with 2 layers (64 + 64 bytes) and a 32-byte embedding, and a string array.
    fn sample() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(6u64.to_le_bytes());
        kv_str(&mut b, "general.architecture", "llama");
        kv_u32(&mut b, "llama.block_count", 2);
        kv_u32(&mut b, "llama.embedding_length", 64);
        kv_u32(&mut b, "llama.attention.head_count", 4);
        kv_u32(&mut b, "llama.attention.head_count_kv", 2);
        let key = "tokenizer.ggml.tokens";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        for t in ["a", "bb", "ccc"] {
            b.extend((t.len() as u64).to_le_bytes());
            b.extend(t.as_bytes());
        }
        tensor(&mut b, "token_embd.weight", 0);
        tensor(&mut b, "blk.0.attn_q.weight", 32);
        tensor(&mut b, "blk.1.attn_q.weight", 96);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend([0u8; 160]);
        b
    }

    fn shape_of(bytes: &[u8]) -> Result<ModelShape, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        model_shape(&path)
    }

    #[test]
    fn reads_shape_and_tensor_sizes() {
        let s = shape_of(&sample()).unwrap();
        assert_eq!(
            s,
            ModelShape {
                layers: 2,
                n_embd: 64,
                n_head: 4,
                n_head_kv: 2,
                key_length: 0,
                value_length: 0,
                n_vocab: 3,
                block_bytes: 128,
                other_bytes: 32,
            }
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_not_panics() {
        let good = sample();
        for cut in [0, 3, 8, 20, 40, 100, good.len() - 170, good.len() - 100] {
            assert!(shape_of(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(shape_of(&bad).unwrap_err().contains("no GGUF magic"));
        // A string length of 2^63 is refused before anything is allocated.
        let mut huge = good.clone();
        huge[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(shape_of(&huge).is_err());
        assert!(model_shape(Path::new("/nonexistent.gguf"))
            .unwrap_err()
            .contains("cannot open"));
    }
}
