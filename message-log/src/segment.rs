//! Segment files: where records are durable.
//!
//! A log directory holds segments named by the position of their first
//! record (`00000000000000001234.seg`). A segment is a header and then
//! frames, one per group commit, each written with one `write` and made
//! durable with one `fdatasync`:
//!
//! ```text
//! header  "LTLOGSG1" key_id:u32 first:u64 created_ms:i64 salt:[32]
//!         owner_len:u16 owner crc32:u32
//! frame   "LTCF" body_len:u32 crc32(body_len ‖ body):u32 body
//! body    first:u64 count:u32 { kind:u8 len:u32 bytes }*count
//! ```
//!
//! An entry is a sealed record ([`KIND_SEALED`], see [`crate::record`]) or,
//! for a record pruned before the log reached segments, its leaf hash only
//! ([`KIND_PRUNED`]). All integers are big-endian.
//!
//! The segment being written has zeros written ahead of its commits (see
//! the writer's `ALLOCATED_AHEAD`), so a segment may end in zeros after its
//! last frame; a segment is cut to its last frame when it is closed.
//!
//! After a crash only the last frame of the last segment can be torn:
//! [`recover_tail`] walks the last segment's frame headers (reading a few
//! bytes per frame, never the earlier segments), checks the checksum of the
//! last frame, moves whatever is not zero after the last complete frame
//! aside, and cuts the segment there.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::LogError;

const SEGMENT_MAGIC: &[u8; 8] = b"LTLOGSG1";
const FRAME_MAGIC: &[u8; 4] = b"LTCF";
/// Magic, body length, checksum.
pub const FRAME_HEADER: usize = 12;
/// A frame body's first position and record count.
const BODY_PREFIX: usize = 12;
/// A sealed record.
pub const KIND_SEALED: u8 = 0;
/// A record pruned before migration: its leaf hash only.
pub const KIND_PRUNED: u8 = 1;
/// Largest frame accepted when reading (a group commit of 1,024 records
/// with bodies of up to 16 MiB each stays below it).
const MAX_FRAME: u64 = 1 << 34;

/// What a segment's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key_id: u32,
    pub first_index: u64,
    pub created_ms: i64,
    pub salt: [u8; 32],
    pub owner: String,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.owner.len());
        b.extend_from_slice(SEGMENT_MAGIC);
        b.extend_from_slice(&self.key_id.to_be_bytes());
        b.extend_from_slice(&self.first_index.to_be_bytes());
        b.extend_from_slice(&self.created_ms.to_be_bytes());
        b.extend_from_slice(&self.salt);
        b.extend_from_slice(&(self.owner.len() as u16).to_be_bytes());
        b.extend_from_slice(self.owner.as_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Reads the header at the start of `file`; returns it and its length.
    pub fn read(file: &File) -> Result<(Header, u64), LogError> {
        let mut fixed = [0u8; 62];
        file.read_exact_at(&mut fixed, 0)
            .map_err(|e| LogError(format!("segment header: {e}")))?;
        if &fixed[..8] != SEGMENT_MAGIC {
            return Err(LogError("not a message-log segment".into()));
        }
        let owner_len = u16::from_be_bytes([fixed[60], fixed[61]]) as usize;
        let mut rest = vec![0u8; owner_len + 4];
        file.read_exact_at(&mut rest, 62)
            .map_err(|e| LogError(format!("segment header: {e}")))?;
        let (owner, crc) = rest.split_at(owner_len);
        let mut all = fixed.to_vec();
        all.extend_from_slice(owner);
        if crc32fast::hash(&all).to_be_bytes() != crc {
            return Err(LogError("segment header checksum mismatch".into()));
        }
        let header = Header {
            key_id: u32::from_be_bytes(fixed[8..12].try_into().expect("4 bytes")),
            first_index: u64::from_be_bytes(fixed[12..20].try_into().expect("8 bytes")),
            created_ms: i64::from_be_bytes(fixed[20..28].try_into().expect("8 bytes")),
            salt: fixed[28..60].try_into().expect("32 bytes"),
            owner: String::from_utf8(owner.to_vec())
                .map_err(|_| LogError("segment owner is not UTF-8".into()))?,
        };
        Ok((header, (62 + owner_len + 4) as u64))
    }
}

/// The file name of the segment whose first record is `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The segments in `dir`, by first position.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError(format!("{}: {e}", dir.display())))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_suffix(".seg")
            && n.len() == 20
            && let Ok(first) = n.parse::<u64>()
        {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One group commit being put together.
pub struct FrameBuilder {
    buf: Vec<u8>,
    first: u64,
    count: u32,
}

impl FrameBuilder {
    pub fn new(first: u64) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(FRAME_MAGIC);
        buf.extend_from_slice(&[0; 8]);
        buf.extend_from_slice(&first.to_be_bytes());
        buf.extend_from_slice(&[0; 4]);
        FrameBuilder {
            buf,
            first,
            count: 0,
        }
    }

    /// The position the next entry gets.
    pub fn next_index(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    /// Adds an entry written by `fill`; returns where its bytes lie in the
    /// frame (offset, length).
    pub fn push(
        &mut self,
        kind: u8,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), LogError>,
    ) -> Result<(u64, u32), LogError> {
        let at = self.buf.len();
        self.buf.push(kind);
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        if let Err(e) = fill(&mut self.buf) {
            self.buf.truncate(at);
            return Err(e);
        }
        let len = (self.buf.len() - start) as u32;
        self.buf[at + 1..start].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
        Ok((start as u64, len))
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The frame's bytes, checksummed.
    pub fn finish(mut self) -> Vec<u8> {
        let body_len = (self.buf.len() - FRAME_HEADER) as u32;
        self.buf[4..8].copy_from_slice(&body_len.to_be_bytes());
        self.buf[FRAME_HEADER + 8..FRAME_HEADER + 12].copy_from_slice(&self.count.to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&self.buf[4..8]);
        h.update(&self.buf[FRAME_HEADER..]);
        let crc = h.finalize();
        self.buf[8..12].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// One entry of a frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub kind: u8,
    /// Where its bytes lie in the segment file.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// A complete frame read back, with its entries.
#[derive(Debug)]
pub struct Frame {
    /// Where the frame starts in the file.
    pub offset: u64,
    /// Where the next frame starts.
    pub end: u64,
    pub first: u64,
    pub entries: Vec<Entry>,
}

/// Reads the frame at `offset`; `Ok(None)` when there is no complete,
/// checksummed frame there (the end, or a torn tail).
pub fn read_frame(file: &File, offset: u64, file_len: u64) -> Result<Option<Frame>, LogError> {
    let Some((body_len, crc)) = frame_header(file, offset, file_len)? else {
        return Ok(None);
    };
    let mut body = vec![0u8; body_len as usize];
    if !read_unless_cut(file, &mut body, offset + FRAME_HEADER as u64)? {
        return Ok(None);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&(body_len as u32).to_be_bytes());
    h.update(&body);
    if h.finalize() != crc || body.len() < BODY_PREFIX {
        return Ok(None);
    }
    let first = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    let count = u32::from_be_bytes(body[8..12].try_into().expect("4 bytes"));
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = BODY_PREFIX;
    for i in 0..u64::from(count) {
        let Some(head) = body.get(at..at + 5) else {
            return Ok(None);
        };
        let kind = head[0];
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        let Some(bytes) = body.get(at + 5..at + 5 + len) else {
            return Ok(None);
        };
        entries.push(Entry {
            index: first + i,
            kind,
            offset: offset + (FRAME_HEADER + at + 5) as u64,
            bytes: bytes.to_vec(),
        });
        at += 5 + len;
    }
    if at != body.len() {
        return Ok(None);
    }
    Ok(Some(Frame {
        offset,
        end: offset + FRAME_HEADER as u64 + body_len,
        first,
        entries,
    }))
}

/// Reads `buf` at `offset`; `false` when the file ends first — it was cut
/// since its length was read: the writer gives back its zeros ahead when it
/// stops, and a reader in another process may be reading beside it. No
/// frame lies there.
fn read_unless_cut(file: &File, buf: &mut [u8], offset: u64) -> Result<bool, LogError> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// (body length, checksum) of a frame header that fits in the file.
fn frame_header(file: &File, offset: u64, file_len: u64) -> Result<Option<(u64, u32)>, LogError> {
    if offset + FRAME_HEADER as u64 > file_len {
        return Ok(None);
    }
    let mut head = [0u8; FRAME_HEADER];
    if !read_unless_cut(file, &mut head, offset)? {
        return Ok(None);
    }
    if &head[..4] != FRAME_MAGIC {
        return Ok(None);
    }
    let body_len = u64::from(u32::from_be_bytes(head[4..8].try_into().expect("4 bytes")));
    let crc = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
    if body_len > MAX_FRAME || offset + FRAME_HEADER as u64 + body_len > file_len {
        return Ok(None);
    }
    Ok(Some((body_len, crc)))
}

/// What recovery found at the end of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// Records in the log (the next position).
    pub size: u64,
    /// Bytes recovery read (it reads the last segment's frame headers and
    /// its last frame, never the earlier segments).
    pub bytes_read: u64,
    /// Bytes after the last complete frame, moved aside.
    pub cut: u64,
}

/// Finds the end of the log in `dir`: the last complete frame of the last
/// segment. With `repair`, bytes after it (a torn tail) are copied to
/// `SEGMENT.torn-N` beside it and cut from the segment, so the writer's
/// next segment follows the last durable record.
pub fn recover_tail(dir: &Path, repair: bool) -> Result<Tail, LogError> {
    let segments = list(dir)?;
    let Some((first, path)) = segments.last() else {
        return Ok(Tail::default());
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|e| LogError(format!("{}: {e}", path.display())))?;
    let file_len = file.metadata()?.len();
    let (header, header_len) = match Header::read(&file) {
        Ok(h) => h,
        // A segment torn before its header was durable holds nothing.
        Err(_) if file_len < header_len_of(&file)? => {
            if repair {
                move_aside(path, 0, &mut file, file_len)?;
                std::fs::remove_file(path)?;
            }
            return Ok(Tail {
                size: *first,
                bytes_read: file_len,
                cut: file_len,
            });
        }
        Err(e) => return Err(LogError(format!("{}: {e}", path.display()))),
    };
    if header.first_index != *first {
        return Err(LogError(format!(
            "{}: its header says it starts at record {}",
            path.display(),
            header.first_index
        )));
    }
    let mut read = header_len;
    // Walk the headers, remembering each frame's start and end.
    let mut frames: Vec<(u64, u64)> = Vec::new();
    let mut at = header_len;
    while let Some((body_len, _)) = frame_header(&file, at, file_len)? {
        read += FRAME_HEADER as u64;
        let end = at + FRAME_HEADER as u64 + body_len;
        frames.push((at, end));
        at = end;
    }
    // Only the last commit can be torn (one writer: write, fdatasync, then
    // the next): a complete frame after the point where the walk stopped
    // means damage, not a crash, and nothing is cut.
    if at < file_len
        && let Some(later) = frame_after(&file, at + 1, file_len)?
    {
        return Err(LogError(format!(
            "{}: damaged at byte {at}, with a complete commit after it at byte {later}; not cutting acknowledged records (restore the segment from a backup)",
            path.display()
        )));
    }
    // The last frame is checked in full; at most it is cut.
    let mut size = *first;
    let mut good_end = header_len;
    for attempt in 0..2 {
        let Some((start, end)) = frames.pop() else {
            break;
        };
        read += end - start;
        if let Some(frame) = read_frame(&file, start, file_len)? {
            size = frame.first + frame.entries.len() as u64;
            good_end = frame.end;
            break;
        }
        if attempt == 1 {
            return Err(LogError(format!(
                "{}: its last two commits are damaged; only the last can be torn by a crash, so nothing is cut (restore the segment from a backup)",
                path.display()
            )));
        }
    }
    // Past the last commit lie the zeros written ahead and, after a
    // crash, perhaps a commit torn over them.
    let torn_end = if good_end < file_len {
        read += file_len - good_end;
        last_nonzero_end(&file, good_end, file_len)?
    } else {
        good_end
    };
    let cut = torn_end - good_end;
    if cut > 0 {
        tracing::warn!(
            segment = %path.display(),
            bytes = cut,
            "message log: an incomplete commit at the end of the log (a crash during a write) is cut off"
        );
        if repair {
            move_aside(path, good_end, &mut file, torn_end)?;
        }
    }
    if repair && good_end < file_len {
        file.set_len(good_end)?;
        file.sync_all()?;
    }
    Ok(Tail {
        size,
        bytes_read: read,
        cut,
    })
}

/// Where the bytes of `[from, to)` of `file` end once the zeros at their
/// end are left off (`from` when all are zero).
fn last_nonzero_end(file: &File, from: u64, to: u64) -> Result<u64, LogError> {
    let mut rest = vec![0u8; (to - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    Ok(from
        + rest
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i as u64 + 1))
}

/// The length of the header at the start of `file`, as far as it can be
/// read (its fixed part names the owner's length).
fn header_len_of(file: &File) -> Result<u64, LogError> {
    let mut owner_len = [0u8; 2];
    match file.read_exact_at(&mut owner_len, 60) {
        Ok(()) => Ok(62 + u64::from(u16::from_be_bytes(owner_len)) + 4),
        Err(_) => Ok(u64::MAX),
    }
}

/// The start of the first complete, checksummed frame at or after `from`.
fn frame_after(file: &File, from: u64, file_len: u64) -> Result<Option<u64>, LogError> {
    let mut rest = vec![0u8; (file_len - from.min(file_len)) as usize];
    file.read_exact_at(&mut rest, from)?;
    let mut i = 0;
    while let Some(p) = rest[i..].windows(4).position(|w| w == FRAME_MAGIC) {
        let at = from + (i + p) as u64;
        if read_frame(file, at, file_len)?.is_some() {
            return Ok(Some(at));
        }
        i += p + 1;
    }
    Ok(None)
}

/// Copies bytes `[from, len)` of `file` to a new `PATH.torn-N` file.
fn move_aside(path: &Path, from: u64, file: &mut File, len: u64) -> Result<(), LogError> {
    let mut n = 0;
    let aside = loop {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".torn-{n}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            break p;
        }
        n += 1;
    };
    let mut bytes = Vec::with_capacity((len - from) as usize);
    file.seek(SeekFrom::Start(from))?;
    file.take(len - from).read_to_end(&mut bytes)?;
    let mut out = File::create(&aside)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    Ok(())
}

/// Makes a directory entry (a new or removed file) durable.
/// Items `first` to `first + count` of `unit` bytes each from `f`, as many
/// whole ones as the file holds (never allocating for more than it holds).
pub(crate) fn read_items(f: &File, first: u64, count: u64, unit: u64) -> std::io::Result<Vec<u8>> {
    let held = (f.metadata()?.len() / unit).saturating_sub(first);
    let mut buf = vec![0u8; (count.min(held) * unit) as usize];
    let mut read = 0;
    while read < buf.len() {
        match f.read_at(&mut buf[read..], first * unit + read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(read - read % unit as usize);
    Ok(buf)
}

pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path, first: u64, frames: &[Vec<Vec<u8>>]) -> PathBuf {
        let path = dir.join(file_name(first));
        let mut f = File::create(&path).unwrap();
        let h = Header {
            key_id: 1,
            first_index: first,
            created_ms: 5,
            salt: [3; 32],
            owner: "VN/GOV/1/ss".into(),
        };
        f.write_all(&h.encode()).unwrap();
        let mut next = first;
        for records in frames {
            let mut b = FrameBuilder::new(next);
            for r in records {
                b.push(KIND_SEALED, |out| {
                    out.extend_from_slice(r);
                    Ok(())
                })
                .unwrap();
            }
            next = b.next_index();
            f.write_all(&b.finish()).unwrap();
        }
        path
    }

    #[test]
    fn frames_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(
            dir.path(),
            10,
            &[vec![b"a".to_vec(), b"bc".to_vec()], vec![b"d".to_vec()]],
        );
        let f = File::open(&path).unwrap();
        let (h, at) = Header::read(&f).unwrap();
        assert_eq!(h.first_index, 10);
        let len = f.metadata().unwrap().len();
        let one = read_frame(&f, at, len).unwrap().unwrap();
        assert_eq!(one.entries.len(), 2);
        assert_eq!(one.entries[1].index, 11);
        assert_eq!(one.entries[1].bytes, b"bc");
        let mut raw = vec![0u8; 2];
        f.read_exact_at(&mut raw, one.entries[1].offset).unwrap();
        assert_eq!(raw, b"bc", "entry offsets point into the file");
        let two = read_frame(&f, one.end, len).unwrap().unwrap();
        assert_eq!(two.first, 12);
        assert!(read_frame(&f, two.end, len).unwrap().is_none());
        assert_eq!(recover_tail(dir.path(), false).unwrap().size, 13);
    }

    /// A copy of the segment cut at every byte of its last commit, or with
    /// a byte of it flipped, recovers to the records of the earlier
    /// commits, reading only the segment's frame headers and last frames.
    /// A reader in another process reads the segment the writer gives its
    /// zeros back from as it stops: the file ends before the length the
    /// reader took. Where a frame's header or body would lie past the new
    /// end there is no frame — the end of the log, never an error (which
    /// made such a reader's index miss committed records until it tried
    /// again).
    #[test]
    fn a_segment_cut_under_a_reader_ends_where_it_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<Vec<Vec<u8>>> = vec![vec![vec![1; 40]], vec![vec![2; 40]]];
        let path = segment(dir.path(), 0, &frames);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (_, at) = Header::read(&f).unwrap();
        let first = read_frame(&f, at, f.metadata().unwrap().len())
            .unwrap()
            .unwrap();
        let second_end = f.metadata().unwrap().len();
        // Zeros ahead, then the length a reader takes, then the cut.
        f.set_len(second_end + 4096).unwrap();
        let seen = f.metadata().unwrap().len();
        for cut in [
            second_end,
            first.end + 5,
            first.end + FRAME_HEADER as u64 + 3,
        ] {
            f.set_len(cut).unwrap();
            let at_cut = if cut == second_end {
                second_end
            } else {
                first.end
            };
            assert!(
                read_frame(&f, at_cut, seen).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_torn_last_commit_is_cut_back_at_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<Vec<Vec<u8>>> = (0..20)
            .map(|i| (0..3).map(|j| vec![i as u8; 50 + j]).collect())
            .collect();
        let path = segment(dir.path(), 0, &frames);
        let whole = std::fs::read(&path).unwrap();
        let f = File::open(&path).unwrap();
        let (_, mut at) = Header::read(&f).unwrap();
        let mut last_start = 0;
        while let Some(fr) = read_frame(&f, at, whole.len() as u64).unwrap() {
            last_start = fr.offset;
            at = fr.end;
        }
        let cases: Vec<Vec<u8>> = (last_start as usize..whole.len())
            .map(|cut| whole[..cut].to_vec())
            .chain((last_start as usize..whole.len()).map(|i| {
                let mut b = whole.clone();
                b[i] ^= 0x40;
                b
            }))
            .collect();
        for (n, bytes) in cases.iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join(file_name(0));
            std::fs::write(&p, bytes).unwrap();
            let tail = recover_tail(d.path(), true).unwrap();
            assert_eq!(tail.size, 57, "case {n}: the 19 earlier commits stay");
            assert_eq!(std::fs::metadata(&p).unwrap().len(), last_start, "case {n}");
            assert!(
                // The headers, the last two frames, what follows the last
                // complete one.
                tail.bytes_read < 20 * FRAME_HEADER as u64 + 3 * 200 + 200,
                "case {n}: read {} bytes",
                tail.bytes_read
            );
            assert_eq!(
                recover_tail(d.path(), true).unwrap().cut,
                0,
                "case {n}: repaired"
            );
        }
        // Untouched: nothing is cut.
        let tail = recover_tail(dir.path(), true).unwrap();
        assert_eq!((tail.size, tail.cut), (60, 0));
    }

    /// Zeros written ahead (after the last frame) is not a torn
    /// commit: it is cut without being kept aside; a commit torn inside it
    /// is kept aside without the zeros after it.
    #[test]
    fn zeros_written_ahead_are_cut_and_only_a_torn_commit_is_kept() {
        let frames: Vec<Vec<Vec<u8>>> = (0..3).map(|i| vec![vec![i as u8 + 1; 40]]).collect();
        let torn = {
            let mut b = FrameBuilder::new(3);
            b.push(KIND_SEALED, |out| {
                out.extend_from_slice(&[9; 40]);
                Ok(())
            })
            .unwrap();
            let mut bytes = b.finish();
            // Its last bytes never reached the disk.
            bytes.truncate(bytes.len() - 10);
            bytes
        };
        for with_torn in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = segment(dir.path(), 0, &frames);
            let end = std::fs::metadata(&path).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            if with_torn {
                f.write_all_at(&torn, end).unwrap();
            }
            f.set_len(end + 64 * 1024).unwrap();
            drop(f);
            let tail = recover_tail(dir.path(), true).unwrap();
            assert_eq!(tail.size, 3, "torn: {with_torn}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
            let aside = dir.path().join(format!("{}.torn-0", file_name(0)));
            if with_torn {
                assert_eq!(tail.cut, torn.len() as u64);
                assert_eq!(std::fs::read(&aside).unwrap(), torn);
            } else {
                assert_eq!(tail.cut, 0);
                assert!(!aside.exists(), "zeros are not kept aside");
            }
            assert_eq!(recover_tail(dir.path(), true).unwrap().cut, 0);
        }
    }
}
