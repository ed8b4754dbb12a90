//! The model files a node holds, and downloading one a workload group names by URL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::model_fetch::{KnownModel, SMOLLM2_135M};

/// Models the node knows by file name, so a cached copy is served under its proper name and
/// still verified like a fresh download.
pub const KNOWN: &[KnownModel] = &[SMOLLM2_135M];

/// One `.gguf` in the model directory.
#[derive(Debug, Clone)]
pub struct DiskFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// Set when the file is a known model (served under its name, verified on load).
    pub known: Option<KnownModel>,
}

/// The name a file is served under when it is not a known model.
pub fn model_name_of(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

/// A known model by its served name.
pub fn known(name: &str) -> Option<KnownModel> {
    KNOWN.iter().find(|k| k.name == name).copied()
}

/// Every complete `.gguf` in `dir`, by served name (downloads in progress end in `.part`).
pub fn on_disk(dir: &Path) -> BTreeMap<String, DiskFile> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") || !path.is_file() {
            continue;
        }
        let bytes = path.metadata().map_or(0, |m| m.len());
        let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let known = KNOWN.iter().find(|k| k.file_name == file_name).copied();
        let name = known.map_or_else(|| model_name_of(&path), |k| k.name.to_string());
        found.insert(name, DiskFile { path, bytes, known });
    }
    found
}

/// The file name a downloaded model gets: its served name, made safe for a path.
pub fn download_name(model: &str) -> String {
    let safe: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.gguf", safe.trim_start_matches('.'))
}

/// Downloads `url` to `dir/<model>.gguf`, through a `.part` file renamed only when complete,
/// so a failed or interrupted download never looks like a model. At most `max_bytes` are
/// accepted. `progress` gets a line every 10% (or every 100 MB when the size is unknown).
pub async fn download(
    url: &str,
    dir: &Path,
    model: &str,
    max_bytes: u64,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<PathBuf, String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join(download_name(model));
    let part = target.with_extension("gguf.part");
    // A server that stops sending must not hold the replica in `loading` forever.
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot download {url}: {e}"))?;
    let resp = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot download {url}: {e}"))?;
    let total = resp.content_length();
    if total.is_some_and(|t| t > max_bytes) {
        return Err(format!(
            "{url} is {} bytes, more than this node offers ({max_bytes})",
            total.unwrap_or(0)
        ));
    }
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    let mut body = resp.bytes_stream();
    let (mut done, mut next_report) = (0u64, 0u64);
    let step = total.map_or(100 << 20, |t| (t / 10).max(1));
    let result = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("download of {url} broke off: {e}"))?;
            done += chunk.len() as u64;
            if done > max_bytes {
                return Err(format!("{url} exceeds {max_bytes} bytes; download stopped"));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            if done >= next_report {
                progress(&match total {
                    Some(t) => format!("downloading {model}: {}%", done * 100 / t.max(1)),
                    None => format!("downloading {model}: {} MB", done >> 20),
                });
                next_report = done + step;
            }
        }
        if total.is_some_and(|t| t != done) {
            return Err(format!(
                "{url} ended after {done} of {} bytes",
                total.unwrap_or(0)
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| format!("cannot write {}: {e}", part.display()))
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| format!("cannot move {} into place: {e}", part.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_names_known_files_and_skips_partial_downloads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.gguf"), b"12345").unwrap();
        std::fs::write(dir.path().join("half.gguf.part"), b"1").unwrap();
        std::fs::write(dir.path().join(SMOLLM2_135M.file_name), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let found = on_disk(dir.path());
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            vec!["other", SMOLLM2_135M.name]
        );
        assert_eq!(found["other"].bytes, 5);
        assert!(found[SMOLLM2_135M.name].known.is_some());
    }

    /// Serves one HTTP response per connection on loopback: `head` then `body`, then closes.
    async fn serve(head: String, body: Vec<u8>) -> String {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        format!("http://{addr}/m.gguf")
    }

    fn ok_head(len: usize) -> String {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_download_lands_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![7u8; 50_000];
        let url = serve(ok_head(body.len()), body.clone()).await;
        let lines = std::sync::Mutex::new(Vec::new());
        let path = download(&url, dir.path(), "my/model", 1 << 20, &|l| {
            lines.lock().unwrap().push(l.to_string())
        })
        .await
        .unwrap();
        assert_eq!(path, dir.path().join("my_model.gguf"));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(
            lines.lock().unwrap().last().unwrap(),
            "downloading my/model: 100%"
        );
        assert_eq!(names(dir.path()), vec!["my_model.gguf"]);

        // Cut off mid-body: an error naming it, and neither the model nor the .part remains.
        let dir = tempfile::tempdir().unwrap();
        let url = serve(ok_head(50_000), vec![1u8; 10_000]).await;
        let err = download(&url, dir.path(), "m", 1 << 20, &|_| {})
            .await
            .unwrap_err();
        assert!(
            err.contains("broke off") || err.contains("ended after"),
            "{err}"
        );
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));

        // Larger than allowed: refused from the header, nothing written.
        let url = serve(ok_head(50_000), vec![1u8; 50_000]).await;
        let err = download(&url, dir.path(), "m", 1_000, &|_| {})
            .await
            .unwrap_err();
        assert!(err.contains("more than this node offers"), "{err}");
        assert!(names(dir.path()).is_empty());

        // No length announced and too long: stopped at the bound, nothing left behind.
        let head = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_string();
        let url = serve(head, vec![1u8; 50_000]).await;
        let err = download(&url, dir.path(), "m", 1_000, &|_| {})
            .await
            .unwrap_err();
        assert!(err.contains("exceeds 1000 bytes"), "{err}");
        assert!(names(dir.path()).is_empty());

        // A 404 is an error with the URL, not a file.
        let head = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string();
        let url = serve(head, Vec::new()).await;
        let err = download(&url, dir.path(), "m", 1_000, &|_| {})
            .await
            .unwrap_err();
        assert!(err.contains("404") && err.contains(&url), "{err}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn download_names_cannot_leave_the_directory() {
        assert_eq!(download_name("../../etc/passwd"), "_.._etc_passwd.gguf");
        assert_eq!(download_name("org/model:q4"), "org_model_q4.gguf");
    }
}
