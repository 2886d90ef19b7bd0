/*
 * psv_example.cpp - the C++ wrapper (include/psv.hpp): save several typed arrays into one .npz,
 * restore them into one 64-byte-aligned block, check every value, and print what came back.
 *
 *   g++ -std=c++17 -Iinclude examples/cpp/psv_example.cpp -Ltarget/release -lpsv \
 *       -Wl,-rpath,$PWD/target/release -o psv_example_cpp
 *   ./psv_example_cpp build/demo_cpp          # writes build/demo_cpp.npz
 *
 * With -std=c++20 psv::Span is std::span. Installed: g++ -std=c++17 x.cpp $(pkg-config --cflags --libs psv)
 */

#include "psv.hpp"

#include <algorithm>
#include <cerrno>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string &what)
{
    if (!ok) {
        std::cerr << "psv_example_cpp: FAILED: " << what << '\n';
        failures++;
    }
}

std::string shape_str(psv::Span<const std::int64_t> shape)
{
    std::ostringstream out;
    out << '(';
    for (std::size_t d = 0; d < shape.size(); d++) {
        out << shape[d] << (shape.size() == 1 ? "," : d + 1 < shape.size() ? ", " : "");
    }
    out << ')';
    return out.str();
}

bool same_shape(psv::Span<const std::int64_t> got, std::initializer_list<std::int64_t> want)
{
    if (got.size() != want.size()) {
        return false;
    }
    std::size_t d = 0;
    for (std::int64_t w : want) {
        if (got[d++] != w) {
            return false;
        }
    }
    return true;
}

// Checks one restored array: dtype (by view<T>), shape, alignment, inside the block, every value.
template <class T>
void check_values(const psv::Archive &archive, const std::string &key, const std::vector<T> &want,
                  std::initializer_list<std::int64_t> shape)
{
    psv::View<T> v = archive.view<T>(key);
    expect(v.size() == want.size(), key + ": element count");
    expect(same_shape(v.shape(), shape), key + ": shape " + shape_str(v.shape()));
    expect(reinterpret_cast<std::uintptr_t>(v.data()) % 64 == 0, key + ": data not 64-byte aligned");
    if (!archive.is_mapped(archive.index(key))) { // mmap mode: views of the file mapping instead
        psv::Span<const std::byte> block = archive.block();
        const auto *first = reinterpret_cast<const std::byte *>(v.data());
        expect(first >= block.data() && first + v.size_bytes() <= block.data() + block.size(),
               key + ": data outside the block");
    }
    std::size_t bad = 0;
    for (std::size_t i = 0; i < v.size() && i < want.size(); i++) {
        bad += !(v[i] == want[i]);
    }
    expect(bad == 0, key + ": " + std::to_string(bad) + " values differ");
}

struct Point { // numpy record [('x', '<f4'), ('y', '<f4')]: two floats, no padding
    float x;
    float y;
};
static_assert(sizeof(Point) == 8, "Point has no padding");

} // namespace

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " OUTPUT_PREFIX   (writes OUTPUT_PREFIX.npz)\n";
        return 2;
    }
    const std::string path = std::string(argv[1]) + ".npz";
    std::cout << "libpsv " << psv::version() << " (header " << PSV_VERSION_MAJOR << '.' << PSV_VERSION_MINOR
              << '.' << PSV_VERSION_PATCH << "), psv::Span is "
              << (PSV_HPP_STD_SPAN ? "std::span" : "psv's own span") << '\n';
    if (!psv::abi_compatible()) {
        std::cerr << "psv_example_cpp: library ABI " << psv_abi_version() << " != header ABI " << PSV_ABI_VERSION
                  << '\n';
        return 1;
    }

    try {
        // --- the data (the saver borrows it: it must outlive `saver`) -----------------------
        std::vector<double> wave(1000000);
        for (std::size_t i = 0; i < wave.size(); i++) {
            wave[i] = static_cast<double>(i) * 0.5 - 1000.0; // exact in binary
        }
        std::vector<std::int32_t> grid(300 * 700);
        for (std::size_t i = 0; i < grid.size(); i++) {
            grid[i] = static_cast<std::int32_t>(i * 7) - 100000;
        }
        std::vector<std::uint16_t> counts(1001);
        for (std::size_t i = 0; i < counts.size(); i++) {
            counts[i] = static_cast<std::uint16_t>(i * 65);
        }
        std::vector<std::complex<float>> phases(257);
        for (std::size_t i = 0; i < phases.size(); i++) {
            phases[i] = {static_cast<float>(i), -static_cast<float>(i) / 4.0f};
        }
        std::vector<std::int64_t> big_ints = {INT64_MIN, -1, 0, 1, INT64_MAX};
        bool mask[6] = {true, false, true, true, false, true};
        const float scalar = 2.5f;
        std::vector<Point> points = {{0.0f, 1.0f}, {2.0f, 3.0f}, {4.5f, -5.5f}};

        // --- save -------------------------------------------------------------------------
        psv::Saver saver;
        saver.add("wave", wave.data(), {static_cast<std::int64_t>(wave.size())})
            .add("grid", grid.data(), {300, 700})
            .add("counts", counts) // 1-d from a vector
            .add("phases", phases.data(), std::vector<std::int64_t>{257})
            .add("big_ints", big_ints.data(), {5})
            .add("mask", mask, {2, 3})
            .add("scalar", &scalar, {}) // 0-d
            .add("empty", static_cast<const std::int64_t *>(nullptr), {0, 5})
            .add_descr("points", points.data(), points.size() * sizeof(Point), "[('x', '<f4'), ('y', '<f4')]",
                       {static_cast<std::int64_t>(points.size())});
        expect(saver.size() == 9, "saver.size()");
        saver.save(path, psv::SaveOptions().threads(2).fsync(false));

        // Adding the same key again is refused with PSV_ERR_INVALID_ARG.
        try {
            saver.add("wave", wave.data(), {1});
            expect(false, "duplicate key accepted");
        } catch (const psv::Error &e) {
            expect(e.status() == PSV_ERR_INVALID_ARG, std::string("duplicate key: ") + e.what());
        }

        // --- restore ----------------------------------------------------------------------
        psv::RestoreOptions options;
        options.threads(2).verify_crc(true).max_total_bytes(std::uint64_t(1) << 30).max_members(1000);
        psv::Archive archive = psv::restore(path, options);
        expect(archive.size() == 9, "archive.size() is " + std::to_string(archive.size()));

        check_values(archive, "wave", wave, {1000000});
        check_values(archive, "grid", grid, {300, 700});
        check_values(archive, "counts", counts, {1001});
        check_values(archive, "phases", phases, {257});
        check_values(archive, "big_ints", big_ints, {5});
        psv::View<bool> m = archive.view<bool>("mask");
        expect(m.size() == 6 && std::memcmp(m.data(), mask, sizeof mask) == 0, "mask values");
        psv::View<float> s = archive.view<float>("scalar");
        expect(s.ndim() == 0 && s.size() == 1 && s[0] == 2.5f, "0-d scalar");
        psv::View<std::int64_t> e = archive.view<std::int64_t>("empty");
        expect(e.empty() && same_shape(e.shape(), {0, 5}), "empty array");

        // A record: no C++ element type, so read it as bytes with its descr.
        const std::size_t ip = archive.index("points");
        expect(archive.dtype(ip) == PSV_DTYPE_OTHER, "points dtype is PSV_DTYPE_OTHER");
        expect(archive.itemsize(ip) == sizeof(Point), "points itemsize");
        psv::Span<const std::byte> raw = archive.bytes(ip);
        expect(raw.size() == points.size() * sizeof(Point) &&
                   std::memcmp(raw.data(), points.data(), raw.size()) == 0,
               "points bytes");

        // Wrong element type: view<T> throws PSV_ERR_BAD_DTYPE.
        try {
            (void)archive.view<float>("grid");
            expect(false, "view<float> of an int32 array did not throw");
        } catch (const psv::Error &err) {
            expect(err.status() == PSV_ERR_BAD_DTYPE, "wrong dtype status");
        }
        expect(!archive.find("no such key").has_value(), "find(missing) is nullopt");
        expect(archive.contains("grid"), "contains(grid)");

        // Iterate and print.
        for (psv::Entry entry : archive) {
            std::printf("  %-8s %-30s shape %-12s %9zu bytes%s\n", std::string(entry.key()).c_str(),
                        std::string(entry.descr()).c_str(), shape_str(entry.shape()).c_str(), entry.nbytes(),
                        entry.is<double>() ? "  (double)" : "");
        }
        psv::View<double> w = archive.view<double>("wave");
        double sum = 0;
        for (double x : w.span()) { // std::span under C++20
            sum += x;
        }
        expect(sum == 0.5 * 499999500000.0 - 1000.0 * 1e6, "sum of wave"); // exact: multiples of 0.5 below 2^52
        std::printf("wave[999999] = %g, sum = %.1f, grid[299][699] = %d\n", w[999999], sum,
                    archive.view<std::int32_t>("grid")[299 * 700 + 699]);

        // A compressed save (deflate level 6, as numpy.savez_compressed) with a progress callback.
        const std::string zpath = std::string(argv[1]) + "_deflate.npz";
        std::uint64_t calls = 0, last_done = 0, last_total = 0;
        saver.save(zpath, psv::SaveOptions().compression(6).progress([&](std::uint64_t done, std::uint64_t total) {
            calls++;
            last_done = done;
            last_total = total;
            return true;
        }));
        expect(calls > 0 && last_done == last_total, "save progress reached the total");

        // Only two of the arrays, in the order asked, from the compressed file held in memory.
        std::ifstream in(zpath, std::ios::binary);
        const std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        psv::Archive some = psv::restore_from_memory(file.data(), file.size(),
                                                     psv::RestoreOptions().keys({"grid", "scalar"}));
        expect(some.size() == 2 && some.key(0) == "grid" && some.key(1) == "scalar", "keys() selection");
        check_values(some, "grid", grid, {300, 700});

        // Other destinations give the bytes of the path save: memory, a stream, byte ranges.
        {
            std::ifstream sin(path, std::ios::binary);
            const std::vector<char> stored((std::istreambuf_iterator<char>(sin)), std::istreambuf_iterator<char>());
            const std::vector<std::uint8_t> bytes = saver.to_bytes();
            expect(bytes.size() == stored.size() && std::equal(bytes.begin(), bytes.end(), stored.begin(),
                                                               [](std::uint8_t a, char b) { return a == static_cast<std::uint8_t>(b); }),
                   "to_bytes() is the path save");
            expect(saver.byte_size() == stored.size(), "byte_size()");
            std::vector<char> streamed;
            saver.save_stream([&](const void *buf, std::size_t len) {
                const char *p = static_cast<const char *>(buf);
                streamed.insert(streamed.end(), p, p + len);
            });
            expect(streamed == stored, "save_stream() is the path save");
            psv::Prepared prepared(saver);
            std::vector<char> parts(static_cast<std::size_t>(prepared.size()));
            const std::size_t part = 1 << 20;
            for (std::size_t at = parts.size(); at > 0;) { // last part first
                const std::size_t start = (at - 1) / part * part;
                prepared.render(start, parts.data() + start, at - start);
                at = start;
            }
            expect(parts == stored, "rendered parts are the path save");
            // Asynchronous saves: a Job per save; snapshot lets the arrays change at once.
            {
                std::vector<double> live(1 << 16, 1.5);
                psv::Saver async_saver;
                async_saver.add("live", live.data(), {static_cast<std::int64_t>(live.size())});
                const std::string apath = std::string(argv[1]) + "_async.npz";
                psv::Job job = async_saver.save_async(apath, psv::SaveOptions().snapshot(true));
                std::fill(live.begin(), live.end(), -1.0); // not in the file: it saves the snapshot
                job.wait();
                expect(job.done() && job.progress().first == job.progress().second, "job done, progress whole");
                check_values(psv::restore(apath), "live", std::vector<double>(1 << 16, 1.5), {1 << 16});
                // Every destination has its async twin; here libpsv memory.
                psv::Job bytes_job = saver.to_bytes_async();
                const std::vector<std::uint8_t> async_bytes = bytes_job.take_bytes();
                expect(async_bytes == saver.to_bytes(), "to_bytes_async() is the path save");
                // Errors come back from wait(); a file used as a directory: PSV_ERR_IO.
                psv::Job bad = async_saver.save_async(apath + "/sub");
                try {
                    bad.wait();
                    expect(false, "an impossible async save did not throw");
                } catch (const psv::Error &err) {
                    expect(err.status() == PSV_ERR_IO && err.os_code() == ENOTDIR, "async error at wait");
                }
                // A Job whose destructor runs first waits for its save (it does not cancel).
                { psv::Job dropped = async_saver.save_async(apath); }
                expect(psv::restore(apath).size() == 1, "a dropped Job still saved");
                std::remove(apath.c_str());
            }
            // A stream that throws: the exception comes back, the stream stops.
            try {
                saver.save_stream([](const void *, std::size_t) { throw std::runtime_error("upload failed"); });
                expect(false, "a throwing stream did not throw");
            } catch (const std::runtime_error &err) {
                expect(std::string(err.what()) == "upload failed", "the stream's own exception");
            }
            // The stream restore: from a std::istream, and from a callable (one pass, no seek).
            {
                std::ifstream in(path, std::ios::binary);
                psv::Archive streamed_back = psv::restore_stream(in);
                check_values(streamed_back, "wave", wave, {1000000});
                std::size_t at = 0;
                psv::Archive from_callable = psv::restore_stream([&](void *buf, std::size_t len) {
                    const std::size_t n = std::min(len, stored.size() - at);
                    std::copy(stored.begin() + at, stored.begin() + at + n, static_cast<char *>(buf));
                    at += n;
                    return n;
                });
                check_values(from_callable, "wave", wave, {1000000});
                // A read that throws: the exception comes back, the restore stops.
                try {
                    psv::restore_stream([](void *, std::size_t) -> std::size_t { throw std::runtime_error("download failed"); });
                    expect(false, "a throwing read did not throw");
                } catch (const std::runtime_error &err) {
                    expect(std::string(err.what()) == "download failed", "the read's own exception");
                }
                // A stream cut short: psv::Error with PSV_ERR_FORMAT.
                std::size_t cut_at = 0;
                try {
                    psv::restore_stream([&](void *buf, std::size_t len) {
                        const std::size_t n = std::min(len, stored.size() / 2 - cut_at);
                        std::copy(stored.begin() + cut_at, stored.begin() + cut_at + n, static_cast<char *>(buf));
                        cut_at += n;
                        return n;
                    });
                    expect(false, "a truncated stream restored");
                } catch (const psv::Error &err) {
                    expect(err.status() == PSV_ERR_FORMAT, "a truncated stream is PSV_ERR_FORMAT");
                }
            }
            // Restore into caller memory sized by a metadata-only restore.
            const std::size_t need =
                psv::restore(path, psv::RestoreOptions().metadata_only(true)).required_bytes();
            std::vector<std::uint8_t> raw(need + 64);
            void *aligned = raw.data() + (64 - reinterpret_cast<std::uintptr_t>(raw.data()) % 64) % 64;
            psv::Archive into = psv::restore_into(path, aligned, need);
            const std::size_t wi = into.index("wave");
            expect(into.data(wi) == static_cast<const char *>(aligned) + into.offset(wi), "views point into the buffer");
            check_values(into, "wave", wave, {1000000});
        }

        // Memory-mapped restore of the stored (uncompressed) file: same values, pages load lazily.
        psv::Archive mapped = psv::restore(path, psv::RestoreOptions().mmap(true));
        check_values(mapped, "wave", wave, {1000000});
        std::cout << "mmap restore: 'wave' is " << (mapped[mapped.index("wave")].is_mapped() ? "" : "not ")
                  << "a view of the file mapping\n";

        // Metadata only: shapes and descrs, no data (typed views throw).
        psv::Archive meta = psv::restore(zpath, psv::RestoreOptions().metadata_only(true));
        expect(meta.size() == 9 && same_shape(meta.shape(meta.index("grid")), {300, 700}), "metadata-only shape");
        try {
            (void)meta.view<std::int32_t>("grid");
            expect(false, "view of a metadata-only archive did not throw");
        } catch (const psv::Error &err) {
            expect(err.status() == PSV_ERR_INVALID_ARG, "metadata-only view status");
        }

        // Cancelling from the callback: PSV_ERR_ABORTED, and the archive is never handed out.
        try {
            psv::restore(zpath, psv::RestoreOptions().progress([](std::uint64_t, std::uint64_t) { return false; }));
            expect(false, "a cancelled restore did not throw");
        } catch (const psv::Error &err) {
            expect(err.status() == PSV_ERR_ABORTED, "cancelled restore status");
        }
        // An exception thrown by the callback never crosses libpsv: it comes back out of save().
        try {
            saver.save(zpath, psv::SaveOptions().progress([](std::uint64_t, std::uint64_t) -> bool {
                throw std::runtime_error("stop from the callback");
            }));
            expect(false, "a throwing callback did not stop the save");
        } catch (const psv::Error &err) {
            expect(false, std::string("expected the callback's exception, got ") + err.what());
        } catch (const std::runtime_error &err) {
            expect(std::string(err.what()) == "stop from the callback", "callback exception rethrown");
        }
        std::remove(zpath.c_str());

        // A collective save, its three "ranks" simulated in this one process (the host would
        // allgather the manifests and gather the reports over MPI): one .npz, byte-identical
        // to a single saver holding every rank's arrays in rank order.
        {
            const std::string cpath = std::string(argv[1]) + "_collective.npz";
            const std::string whole = std::string(argv[1]) + "_whole.npz";
            std::vector<std::vector<float>> data(3);
            std::vector<psv::Saver> ranks(3);
            psv::Saver all;
            for (std::size_t r = 0; r < 3; r++) {
                data[r].resize(1000 * (r + 1) + 7);
                for (std::size_t i = 0; i < data[r].size(); i++) {
                    data[r][i] = static_cast<float>(r * 100000 + i);
                }
                const std::string key = "rank" + std::to_string(r);
                ranks[r].add(key, data[r]);
                all.add(key, data[r]);
            }
            const auto opts = [] { return psv::SaveOptions().threads(2).alignment(4096); };
            std::vector<std::vector<std::uint8_t>> manifests;
            for (const auto &s : ranks) {
                manifests.push_back(s.manifest());
            }
            std::vector<psv::Collective> parts;
            for (std::size_t r = 0; r < 3; r++) {
                parts.emplace_back(cpath, manifests, r, opts());
            }
            expect(parts[1].plan_id() == parts[0].plan_id() && parts[2].plan_id() == parts[0].plan_id(),
                   "every rank plans the same file");
            expect(!parts[0].temp_path().empty() && parts[2].temp_path() == parts[0].temp_path(),
                   "one temporary path");
            parts[0].create();
            std::vector<std::vector<std::uint8_t>> reports;
            for (std::size_t r = 0; r < 3; r++) {
                reports.push_back(parts[r].write(ranks[r]));
            }
            parts[0].commit(reports);
            all.save(whole, opts());
            const auto bytes_of = [](const std::string &p) {
                std::ifstream in(p, std::ios::binary);
                return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            };
            const std::vector<char> got = bytes_of(cpath);
            expect(!got.empty() && got == bytes_of(whole), "collective file == one saver's file");
            psv::Archive back = psv::restore(cpath);
            check_values(back, "rank2", data[2], {static_cast<std::int64_t>(data[2].size())});

            // The same key on two ranks: INVALID_ARG on construction, naming both ranks.
            psv::Saver dup;
            dup.add("rank0", data[1]);
            try {
                psv::Collective bad(cpath, {manifests[0], dup.manifest()}, 0, opts());
                expect(false, "a key on two ranks did not throw");
            } catch (const psv::Error &err) {
                expect(err.status() == PSV_ERR_INVALID_ARG, "duplicate key status");
                expect(err.message().find("rank0") != std::string::npos, "duplicate key named");
            }
            // An aborted save (some rank failed) leaves the target as it was.
            {
                std::vector<psv::Collective> again;
                for (std::size_t r = 0; r < 3; r++) {
                    again.emplace_back(cpath, manifests, r, opts());
                }
                again[0].create();
                (void)again[1].write(ranks[1]);
                again[0].abort();
                std::ifstream gone(again[0].temp_path());
                expect(!gone.good(), "abort removes the temporary file");
            }
            expect(bytes_of(cpath) == got, "abort leaves the target byte-identical");
            std::remove(cpath.c_str());
            std::remove(whole.c_str());
            std::cout << "collective save of 3 ranks: " << got.size() << " bytes, identical to one saver\n";
        }

        // Moving transfers ownership; the moved-from archive is empty.
        psv::Archive moved = std::move(archive);
        expect(moved.size() == 9 && archive.size() == 0 && !archive, "move");

        // A missing file: psv::Error with PSV_ERR_IO and the path in the message.
        try {
            psv::restore(std::string(argv[1]) + "_does_not_exist");
            expect(false, "restoring a missing file did not throw");
        } catch (const psv::Error &err) {
            expect(err.status() == PSV_ERR_IO, "missing file status");
            expect(err.os_code() == ENOENT, "missing file errno");
            expect(err.message().find("_does_not_exist") != std::string::npos, "message names the path");
            std::cout << "expected error: " << err.what() << '\n';
        }
    } catch (const std::exception &e) {
        std::cerr << "psv_example_cpp: " << e.what() << '\n';
        return 1;
    }

    if (failures != 0) {
        std::cerr << "psv_example_cpp: " << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "all values, dtypes, shapes and alignments check out\n";
    return 0;
}
