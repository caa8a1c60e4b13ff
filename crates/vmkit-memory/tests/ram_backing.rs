//! RAM block backings (anonymous, memfd shared with another process, files
//! mapped shared and private) and the refusal of bad input.

use std::fs::{self, File};
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use vmkit_memory::{DirtyClient, Error, RamBacking, RamBlock, RamOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MIB: u64 = 1 << 20;
const CHILD_ENV: &str = "VMKIT_MEMFD_CHILD_SIZE";
const PARENT_BYTES: &[u8] = b"written by the parent";
const CHILD_BYTES: &[u8] = b"written by the child process";

fn err_of<T: std::fmt::Debug>(r: vmkit_memory::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

/// A path in the temp directory unique to this process and test, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        let p = std::env::temp_dir().join(format!("vmkit-memory-{}-{tag}", std::process::id()));
        let _ = fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn memfd_is_shared_with_a_child_process() -> TestResult {
    let ram = RamBlock::memfd("pc.ram", 2 * MIB)?;
    ram.write(MIB, PARENT_BYTES)?;
    ram.dirty_log().log_start(DirtyClient::Migration)?;
    let fd = ram.fd().ok_or("a memfd block has an fd")?.try_clone_to_owned()?;
    // The child is this test binary running only `memfd_child`, with the
    // memfd as its standard input.
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "memfd_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, (2 * MIB).to_string())
        .stdin(Stdio::from(fd))
        .output()?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{log}");
    assert!(log.contains("1 passed"), "the child test did not run:\n{log}");
    let mut buf = vec![0u8; CHILD_BYTES.len()];
    ram.read(3 * MIB / 2, &mut buf)?;
    assert_eq!(buf, CHILD_BYTES, "the parent sees the child's write");
    // Dirty logs are per process: the child's write is not in ours.
    assert!(ram.dirty_log().sync(DirtyClient::Migration)?.is_empty());
    Ok(())
}

/// The child half of `memfd_is_shared_with_a_child_process`; does nothing
/// unless run by it.
#[test]
#[ignore = "run by memfd_is_shared_with_a_child_process in a child process"]
fn memfd_child() -> TestResult {
    let Ok(size) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let size: u64 = size.parse()?;
    let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let ram = RamBlock::from_memfd_fd("pc.ram", size, fd)?;
    let mut buf = vec![0u8; PARENT_BYTES.len()];
    ram.read(MIB, &mut buf)?;
    assert_eq!(buf, PARENT_BYTES, "the child sees the parent's write");
    ram.write(3 * MIB / 2, CHILD_BYTES)?;
    Ok(())
}

#[test]
fn memfd_fd_mapped_twice_in_one_process() -> TestResult {
    let a = RamBlock::memfd("a", MIB)?;
    let b = RamBlock::from_memfd_fd("b", MIB, a.fd().ok_or("fd")?.try_clone_to_owned()?)?;
    assert_eq!(b.backing(), &RamBacking::Memfd);
    a.write_page_pattern(3, 42)?;
    assert_eq!(a.checksum_all()?, b.checksum_all()?);
    b.fill(0, 10, 7)?;
    let mut x = [0u8; 10];
    a.read(0, &mut x)?;
    assert_eq!(x, [7; 10]);
    // A smaller mapping of a larger memfd is fine, a larger one is refused.
    assert!(RamBlock::from_memfd_fd("c", MIB / 2, a.fd().ok_or("fd")?.try_clone_to_owned()?).is_ok());
    let e = err_of(RamBlock::from_memfd_fd(
        "c",
        2 * MIB,
        a.fd().ok_or("fd")?.try_clone_to_owned()?,
    ));
    assert!(matches!(&e, Error::OutOfBounds { name, .. } if name == "c"), "{e}");
    Ok(())
}

#[test]
fn from_memfd_fd_refuses_other_files() -> TestResult {
    let path = TempPath::new("not-a-memfd");
    let f = File::create(&path.0)?;
    f.set_len(MIB)?;
    let e = err_of(RamBlock::from_memfd_fd("pc.ram", MIB, OwnedFd::from(f)));
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(e.to_string().contains("not a memfd"));
    Ok(())
}

#[test]
fn shared_file_writes_reach_the_file() -> TestResult {
    let path = TempPath::new("shared");
    fs::write(&path.0, b"old contents")?;
    let ram = RamBlock::file("mem-path", MIB, &path.0, true)?;
    assert_eq!(fs::metadata(&path.0)?.len(), MIB, "extended to the block size");
    let mut head = [0u8; 12];
    ram.read(0, &mut head)?;
    assert_eq!(&head, b"old contents");
    ram.write(4096, b"through the mapping")?;
    ram.flush()?;
    let data = fs::read(&path.0)?;
    assert_eq!(&data[4096..4096 + 19], b"through the mapping");
    assert!(ram.fd().is_some(), "a shared file can be mapped by another process");
    assert_eq!(
        ram.backing(),
        &RamBacking::File {
            path: path.0.clone(),
            shared: true
        }
    );
    Ok(())
}

#[test]
fn private_file_writes_stay_private() -> TestResult {
    let path = TempPath::new("private");
    {
        let mut f = File::create(&path.0)?;
        f.write_all(&vec![0x5a; 2 * MIB as usize])?; // longer than the block: kept as is
    }
    let ram = RamBlock::file("mem-path", MIB, &path.0, false)?;
    assert_eq!(ram.checksum(0, 100)?, vmkit_memory::checksum::checksum(&[0x5a; 100]));
    ram.fill(0, MIB, 0)?;
    assert!(ram.is_zero(0, MIB)?);
    let data = fs::read(&path.0)?;
    assert_eq!(data.len(), 2 * MIB as usize);
    assert!(
        data.iter().all(|&b| b == 0x5a),
        "copy-on-write pages never reach the file"
    );
    assert!(ram.fd().is_none());
    Ok(())
}

#[test]
fn file_in_a_missing_directory_is_an_io_error() {
    let e = err_of(RamBlock::file("mem-path", MIB, "/nonexistent-vmkit-dir/ram", true));
    assert!(
        matches!(&e, Error::Io { context, .. } if context.contains("mem-path")),
        "{e}"
    );
}

#[test]
fn bad_sizes_are_refused() {
    assert!(matches!(err_of(RamBlock::anonymous("pc.ram", 0)), Error::ZeroSize));
    assert!(matches!(err_of(RamBlock::memfd("pc.ram", 0)), Error::ZeroSize));
    let e = err_of(RamBlock::anonymous("pc.ram", 4096 + 512));
    assert!(
        matches!(
            e,
            Error::Unaligned {
                value: 4608,
                align: 4096,
                ..
            }
        ),
        "{e}"
    );
    for page_size in [0u64, 3, 100, 4095, 32] {
        let opts = RamOptions {
            page_size,
            ..Default::default()
        };
        let e = err_of(RamBlock::with_options("pc.ram", 1 << 16, RamBacking::Anonymous, opts));
        assert!(
            matches!(e, Error::InvalidPageSize { page_size: p, .. } if p == page_size),
            "{e}"
        );
    }
    let opts = RamOptions {
        page_size: 1 << 21,
        ..Default::default()
    };
    assert!(matches!(
        err_of(RamBlock::with_options("pc.ram", 1 << 20, RamBacking::Anonymous, opts)),
        Error::Unaligned { .. }
    ));
    // Larger than the address space can hold.
    assert!(RamBlock::anonymous("pc.ram", 1 << 63).is_err());
    assert!(RamBlock::anonymous("pc.ram", u64::MAX - 4095).is_err());
}

#[test]
fn out_of_bounds_accesses_name_the_block() -> TestResult {
    let ram = RamBlock::anonymous("pc.ram", 16 * 4096)?;
    ram.dirty_log().log_start(DirtyClient::Migration)?;
    let size = ram.used_length();
    let mut buf = [0u8; 8];
    let cases: Vec<(&str, vmkit_memory::Result<()>)> = vec![
        ("read past end", ram.read(size - 4, &mut buf)),
        ("read at end", ram.read(size, &mut buf)),
        ("write past end", ram.write(size - 1, &[1, 2])),
        ("write wrapping", ram.write(u64::MAX, &[1, 2])),
        ("fill past end", ram.fill(size - 10, 11, 0)),
        ("fill wrapping", ram.fill(1, u64::MAX, 0)),
        ("pattern page", ram.write_page_pattern(16, 0)),
        ("pattern huge page", ram.write_page_pattern(u64::MAX, 0)),
        ("pattern longer than a page", ram.write_pattern(0, 4097, 0)),
        ("mark wrapping", ram.dirty_log().mark_range(u64::MAX - 1, 4)),
    ];
    for (what, r) in cases {
        let e = err_of(r);
        assert!(
            matches!(&e, Error::OutOfBounds { name, .. } if name == "pc.ram"),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("'pc.ram'"), "{what}: {e}");
    }
    assert!(matches!(ram.is_zero(size, 1), Err(Error::OutOfBounds { .. })));
    assert!(matches!(ram.is_zero_page(16), Err(Error::OutOfBounds { .. })));
    assert!(matches!(ram.checksum(8, u64::MAX), Err(Error::OutOfBounds { .. })));
    assert!(matches!(ram.host().ptr_at(size, 1), Err(Error::OutOfBounds { .. })));
    // Nothing was written or marked by the refused calls.
    assert!(ram.is_zero(0, size)?);
    assert!(ram.dirty_log().sync(DirtyClient::Migration)?.is_empty());
    // Empty accesses at the very end are fine.
    ram.read(size, &mut [])?;
    ram.write(size, &[])?;
    Ok(())
}

#[test]
fn options_populate_and_huge_pages() -> TestResult {
    for backing in [RamBacking::Anonymous, RamBacking::Memfd] {
        let opts = RamOptions {
            page_size: 4096,
            map: vmkit_memory::MapOptions {
                populate: true,
                huge_pages: true,
            },
        };
        let ram = RamBlock::with_options("pc.ram", 4 * MIB, backing, opts)?;
        assert!(ram.is_zero(0, 4 * MIB)?);
        ram.write_page_pattern(1000, 5)?;
        assert!(!ram.is_zero_page(1000)?);
        assert_eq!(ram.page_count(), 1024);
    }
    Ok(())
}

/// Resident kilobytes (`Rss` in `/proc/self/smaps`) of the mapping that
/// holds `addr` (anonymous mappings may have merged with a neighbour, so
/// the test compares two readings).
fn rss_kib(addr: usize) -> Option<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps").ok()?;
    let holds = |line: &str| {
        let range = line.split(' ').next()?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        Some(start <= addr && addr < end)
    };
    let mut lines = smaps.lines().skip_while(|l| holds(l) != Some(true));
    lines.next()?;
    let rss = lines.find_map(|l| l.strip_prefix("Rss:"))?;
    rss.trim().trim_end_matches("kB").trim().parse().ok()
}

#[test]
fn populate_allocates_the_range_and_keeps_the_contents() -> TestResult {
    let ram = RamBlock::anonymous("pc.ram", 8 * MIB)?;
    ram.write(5 * MIB, b"kept")?;
    let addr = ram.host().as_ptr() as usize;
    let before = rss_kib(addr).ok_or("no smaps entry")?;
    ram.populate(MIB, 2 * MIB)?;
    let after = rss_kib(addr).ok_or("no smaps entry")?;
    assert!(after >= before + 2048, "{before} kB resident, then {after} kB");
    assert!(ram.is_zero(MIB, 2 * MIB)?);
    let mut kept = [0u8; 4];
    ram.read(5 * MIB, &mut kept)?;
    assert_eq!(&kept, b"kept");
    assert!(matches!(ram.populate(7 * MIB, 2 * MIB), Err(Error::OutOfBounds { .. })));
    Ok(())
}
