//! Criterion benchmarks of the migration stream's RAM encoding and decoding.
//!
//! Run with `cargo bench -p vmkit-benches --bench migration`.
//!
//! Every iteration moves one 256 MiB RAM block through a complete stream as
//! vmkit writes it: file header, configuration, RAM START (MEM_SIZE), one
//! PART with every page, an empty END, EOF. Throughput is RAM bytes per
//! second (the block size), whatever the stream's own size.
//!
//! - `encode_random_sink` / `encode_zero_sink`: encode into a discarding
//!   sink behind [`StreamWriter::buffered`] (encoder cost alone; the zero
//!   case measures zero-page detection).
//! - `encode_random_shm_file`: encode into a file in `/dev/shm`, created
//!   (truncated) before every iteration as `dd of=` does, outside the timed
//!   part; removed afterwards.
//! - `..._gathered`: the same sinks (a file in `/dev/shm`, `/dev/null`)
//!   written by [`RamSectionWriter::write_all_pages_to_fd`], which hands the
//!   kernel the guest pages themselves (`writev`), against `..._staged`
//!   (pages copied into the encoder's stage, then written).
//! - `decode_random` / `decode_zero`: parse a stream held in memory with
//!   [`StreamParser`] and apply it to a destination block with
//!   [`RamSectionReader::apply_to`].
//! - `decode_random_bufreader_copied` / `_lent`: the same through a 1 MiB
//!   `BufReader`, as a socket is read, each page copied out of its buffer
//!   into a page buffer and then into guest memory, or lent from its buffer
//!   straight into guest memory ([`StreamReader::from_buf_read`]).
//!
//! Blocks are mapped with `populate` (prefaulted) and transparent huge pages,
//! as a long-running guest's RAM would be, so that zero memory is real
//! memory rather than the kernel's shared zero page.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, Cursor, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use vmkit_benches::{PAGE, ok, prefaulted_block};
use vmkit_memory::RamBlock;
use vmkit_migration::wire::section::write_file_header;
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{
    Configuration, ParserOptions, RamSectionReader, RamSectionWriter, SectionKind, StreamParser, StreamReader,
    StreamWriter,
};

const MIB: u64 = 1 << 20;
/// The RAM moved per iteration.
const RAM: u64 = 256 * MIB;

/// A block filled with xorshift64* output: no page is zero.
fn random_block(name: &str, size: u64) -> Arc<RamBlock> {
    let b = prefaulted_block(name, size);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; MIB as usize];
    for off in (0..size).step_by(MIB as usize) {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        ok(b.write(off, &chunk));
    }
    b
}

/// Writes a complete stream of `ram`'s blocks into `w` and flushes it;
/// returns the stream's length.
fn encode<W: Write>(ram: &mut RamSectionWriter, w: &mut StreamWriter<W>) -> u64 {
    encode_via(ram, w, None)
}

/// [`encode`], the pages gathered straight into `direct` (the descriptor
/// `w` writes to) when given.
fn encode_via<W: Write>(ram: &mut RamSectionWriter, w: &mut StreamWriter<W>, direct: Option<BorrowedFd<'_>>) -> u64 {
    ok(write_file_header(w));
    ok(Configuration::new("pc-q35-9.2").write(w));
    ok(ram.save_setup(w, 0, true));
    ok(ram.begin_section(w, SectionKind::Part, 0));
    match direct {
        Some(fd) => ok(ram.write_all_pages_to_fd(w, fd)),
        None => ok(ram.write_all_pages(w)),
    }
    ok(ram.end_section(w, 0, true));
    ok(ram.begin_section(w, SectionKind::End, 0));
    ok(ram.end_section(w, 0, true));
    ok(write_eof(w));
    ok(w.flush());
    w.offset()
}

/// The stream of `src` as bytes.
fn encoded(src: &Arc<RamBlock>) -> Vec<u8> {
    let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
    let mut w = StreamWriter::new(Vec::with_capacity((RAM + RAM / 64) as usize));
    encode(&mut ram, &mut w);
    w.into_inner()
}

/// Parses `stream` and applies its RAM sections to `dst`.
fn decode(stream: &[u8], dst: &Arc<RamBlock>) {
    decode_with(StreamReader::new(Cursor::new(stream)), dst);
}

/// [`decode`] through a 1 MiB `BufReader`, as a socket is read: pages
/// copied out of it into a page buffer, then into `dst` (`lend` false),
/// or lent from it straight into `dst` (`lend` true).
fn decode_buffered(stream: &[u8], dst: &Arc<RamBlock>, lend: bool) {
    let buffered = BufReader::with_capacity(1 << 20, stream);
    if lend {
        decode_with(StreamReader::from_buf_read(buffered), dst);
    } else {
        decode_with(StreamReader::new(buffered), dst);
    }
}

fn decode_with<R: std::io::Read>(r: StreamReader<R>, dst: &Arc<RamBlock>) {
    let mut reader = RamSectionReader::apply_to(vec![dst.clone()]);
    let mut p = StreamParser::from_reader(r, ParserOptions::default());
    while ok(p.next_record(&mut reader)).is_some() {}
    let s = &reader.summary().blocks[0];
    assert_eq!(s.zero_pages + s.normal_pages, RAM / PAGE);
}

/// The `migration` group: 10 samples, throughput in RAM bytes.
fn ram_group(c: &mut Criterion) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group("migration");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(RAM));
    g
}

fn encode_to_sink(c: &mut Criterion) {
    let mut g = ram_group(c);
    for (name, src) in [
        ("encode_random_sink", random_block("pc.ram", RAM)),
        ("encode_zero_sink", prefaulted_block("pc.ram", RAM)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
                let mut w = StreamWriter::buffered(std::io::sink());
                black_box(encode(&mut ram, &mut w))
            });
        });
    }
    g.finish();
}

fn encode_to_shm(c: &mut Criterion) {
    let mut g = ram_group(c);
    let src = random_block("pc.ram", RAM);
    let path = PathBuf::from(format!("/dev/shm/vmkit-bench-migration-{}.bin", std::process::id()));
    // The file is created (truncated) outside the timed part, as `dd`
    // opens its output before starting its clock.
    for (name, gathered) in [
        ("encode_random_shm_file", false),
        ("encode_random_shm_file_gathered", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || ok(File::create(&path)),
                |file| {
                    let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
                    let fd = file.as_fd();
                    let mut w = StreamWriter::buffered(&file);
                    black_box(encode_via(&mut ram, &mut w, gathered.then_some(fd)));
                    drop(w);
                    file
                },
                BatchSize::PerIteration,
            );
        });
    }
    // Absent when a filter skipped both cases.
    let _ = std::fs::remove_file(&path);
    g.finish();
}

/// `/dev/null` through a descriptor: staged writes copy every page once
/// (into the stage); gathered writes copy nothing.
fn encode_to_dev_null(c: &mut Criterion) {
    let mut g = ram_group(c);
    let src = random_block("pc.ram", RAM);
    let null = ok(std::fs::OpenOptions::new().write(true).open("/dev/null"));
    for (name, gathered) in [
        ("encode_random_devnull_staged", false),
        ("encode_random_devnull_gathered", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
                let mut w = StreamWriter::buffered(&null);
                black_box(encode_via(&mut ram, &mut w, gathered.then_some(null.as_fd())))
            });
        });
    }
    g.finish();
}

fn decode_from_memory(c: &mut Criterion) {
    let mut g = ram_group(c);
    let random = random_block("pc.ram", RAM);
    let stream = encoded(&random);
    let dst = prefaulted_block("pc.ram", RAM);
    decode(&stream, &dst);
    assert_eq!(ok(random.checksum_all()), ok(dst.checksum_all()), "decoded RAM differs");
    drop(random);
    g.bench_function("decode_random", |b| b.iter(|| decode(black_box(&stream), &dst)));
    for (name, lend) in [
        ("decode_random_bufreader_copied", false),
        ("decode_random_bufreader_lent", true),
    ] {
        decode_buffered(&stream, &dst, lend);
        g.bench_function(name, |b| b.iter(|| decode_buffered(black_box(&stream), &dst, lend)));
    }
    drop((stream, dst));
    // The destination is zero, as a fresh destination's RAM is: each zero
    // record costs a zero check of the destination page and no write.
    let stream = encoded(&prefaulted_block("pc.ram", RAM));
    let dst = prefaulted_block("pc.ram", RAM);
    g.bench_function("decode_zero", |b| b.iter(|| decode(black_box(&stream), &dst)));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode_to_sink, encode_to_shm, encode_to_dev_null, decode_from_memory
}
criterion_main!(benches);
