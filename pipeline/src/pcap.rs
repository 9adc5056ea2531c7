//! Reading and writing classic pcap files in memory (no I/O here: callers hand the
//! bytes to or from files). Used by the demo's traffic source, the golden-pcap tests
//! and the benchmarks.

/// Link type Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// Why a pcap could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("pcap: file shorter than its 24-byte global header")]
    ShortHeader,
    #[error("pcap: bad magic number {0:#010x}")]
    BadMagic(u32),
    #[error("pcap: link type {0} is not Ethernet (1)")]
    LinkType(u32),
    #[error("pcap: record {index} at byte {offset} is truncated")]
    Truncated { index: usize, offset: usize },
}

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    pub ts_sec: u32,
    /// Microseconds or nanoseconds, as the file's magic says; normalised to micros.
    pub ts_usec: u32,
    /// Length of the packet on the wire (may exceed `data.len()` if snapped).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Writes an Ethernet pcap (microsecond timestamps, snaplen 65535) of `frames`,
/// timestamped one microsecond apart from 0.
pub fn write<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC_US.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.into_iter().enumerate() {
        let len = f.len() as u32;
        out.extend_from_slice(&((i / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((i % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn u32_at(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    })
}

/// Reads every record of a classic pcap file (either byte order, micro- or
/// nanosecond timestamps).
pub fn read(bytes: &[u8]) -> Result<Vec<PcapRecord>, PcapError> {
    let magic_le = u32_at(bytes, 0, false).ok_or(PcapError::ShortHeader)?;
    if bytes.len() < 24 {
        return Err(PcapError::ShortHeader);
    }
    let (big_endian, nanos) = match magic_le {
        MAGIC_US => (false, false),
        MAGIC_NS => (false, true),
        m if m.swap_bytes() == MAGIC_US => (true, false),
        m if m.swap_bytes() == MAGIC_NS => (true, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let linktype = u32_at(bytes, 20, big_endian).ok_or(PcapError::ShortHeader)?;
    if linktype != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(linktype));
    }
    let mut out = Vec::new();
    let mut at = 24usize;
    while at < bytes.len() {
        let index = out.len();
        let trunc = PcapError::Truncated { index, offset: at };
        let ts_sec = u32_at(bytes, at, big_endian).ok_or(trunc.clone())?;
        let ts_frac = u32_at(bytes, at + 4, big_endian).ok_or(trunc.clone())?;
        let incl = u32_at(bytes, at + 8, big_endian).ok_or(trunc.clone())? as usize;
        let orig_len = u32_at(bytes, at + 12, big_endian).ok_or(trunc.clone())?;
        let data = bytes.get(at + 16..at + 16 + incl).ok_or(trunc)?;
        out.push(PcapRecord {
            ts_sec,
            ts_usec: if nanos { ts_frac / 1000 } else { ts_frac },
            orig_len,
            data: data.to_vec(),
        });
        at += 16 + incl;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frames: Vec<Vec<u8>> = vec![vec![1; 60], vec![2; 1514], vec![3; 14]];
        let bytes = write(frames.iter().map(|f| f.as_slice()));
        assert_eq!(bytes.len(), 24 + 3 * 16 + 60 + 1514 + 14);
        let recs = read(&bytes).unwrap();
        assert_eq!(recs.len(), 3);
        for (i, (r, f)) in recs.iter().zip(&frames).enumerate() {
            assert_eq!(&r.data, f);
            assert_eq!(r.orig_len as usize, f.len());
            assert_eq!(r.ts_usec as usize, i);
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(read(&[0; 10]), Err(PcapError::ShortHeader));
        assert_eq!(read(&[0; 24]), Err(PcapError::BadMagic(0)));
        let mut bytes = write([[7u8; 20].as_slice()]);
        bytes.truncate(bytes.len() - 1);
        assert_eq!(
            read(&bytes),
            Err(PcapError::Truncated {
                index: 0,
                offset: 24
            })
        );
        let mut eth = write(std::iter::empty());
        eth[20] = 101;
        assert_eq!(read(&eth), Err(PcapError::LinkType(101)));
    }

    #[test]
    fn reads_big_endian_nanosecond_files() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC_NS.to_be_bytes());
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(&4u16.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_be_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&5u32.to_be_bytes());
        b.extend_from_slice(&7000u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&[9, 8, 7]);
        let r = read(&b).unwrap();
        assert_eq!(
            r,
            vec![PcapRecord {
                ts_sec: 5,
                ts_usec: 7,
                orig_len: 3,
                data: vec![9, 8, 7]
            }]
        );
    }
}
