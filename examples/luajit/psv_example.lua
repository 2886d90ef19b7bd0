-- psv_example.lua - libpsv from LuaJIT's ffi, declared from the plain C header.
--
--   cc -std=c99 -E -P include/psv.h > build/psv_cdef.h
--   luajit examples/luajit/psv_example.lua target/release/libpsv.so include/psv.h \
--          build/psv_cdef.h build/luajit_demo          # writes build/luajit_demo.npz
--
-- ffi.cdef gets the preprocessed header unchanged. The preprocessor drops the #define constants,
-- so they are read from the plain header into the Lua table C (C.PSV_OK, C.PSV_DTYPE_F64, ...).
-- Saves a 1e6-element double array, a 300 x 700 int32 array, a uint8 array and a 0-d float,
-- restores them and checks every value, the dtype, shape, and 64-byte alignment of each array.

local ffi = require("ffi")

local lib_path, header_path, cdef_path, out_prefix = arg[1], arg[2], arg[3], arg[4]
if not out_prefix then
    io.stderr:write("usage: luajit psv_example.lua LIBPSV.so PSV.h PREPROCESSED.h OUTPUT_PREFIX\n")
    os.exit(2)
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

ffi.cdef(read_file(cdef_path))
local lib = ffi.load(lib_path)

-- The integer #defines of psv.h.
local C = {}
for name, value in read_file(header_path):gmatch("#define%s+(PSV_[%w_]+)%s+(%-?%d+)") do
    C[name] = tonumber(value)
end
assert(C.PSV_OK == 0 and C.PSV_DTYPE_F64 and C.PSV_ERR_IO and C.PSV_ABI_VERSION, "constants missing")
assert(lib.psv_abi_version() == C.PSV_ABI_VERSION, "library ABI does not match the header")

local failures = 0
local function expect(ok, what)
    if not ok then
        io.stderr:write("psv_example.lua: FAILED: ", what, "\n")
        failures = failures + 1
    end
end

local function last_error()
    local n = lib.psv_last_error_message(nil, 0)
    local buf = ffi.new("char[?]", n + 1)
    lib.psv_last_error_message(buf, n + 1)
    return ffi.string(buf)
end

local function check(status, what)
    if status ~= C.PSV_OK then
        error(string.format("%s: %s: %s", what, ffi.string(lib.psv_status_str(status)), last_error()), 2)
    end
end

local function address(p)
    return tonumber(ffi.cast("uintptr_t", p))
end

print(string.format("libpsv %s via %s", ffi.string(lib.psv_version()), jit.version))

-- --- the data (the saver borrows it: keep every cdata referenced until psv_saver_free) -------
local N = 1000000
local wave = ffi.new("double[?]", N)
for i = 0, N - 1 do
    wave[i] = i * 0.25 - 1000 -- exact in binary
end
local ROWS, COLS = 300, 700
local grid = ffi.new("int32_t[?]", ROWS * COLS)
for r = 0, ROWS - 1 do
    for c = 0, COLS - 1 do
        grid[r * COLS + c] = r * 100000 - c * 3 - 7
    end
end
local bytes = ffi.new("uint8_t[?]", 777)
for i = 0, 776 do
    bytes[i] = (i * 31) % 256
end
local scalar = ffi.new("float[1]", 2.5)

local arrays = {
    { key = "wave", data = wave, dtype = C.PSV_DTYPE_F64, ctype = "const double *", shape = { N }, n = N },
    { key = "grid", data = grid, dtype = C.PSV_DTYPE_I32, ctype = "const int32_t *", shape = { ROWS, COLS }, n = ROWS * COLS },
    { key = "bytes", data = bytes, dtype = C.PSV_DTYPE_U8, ctype = "const uint8_t *", shape = { 777 }, n = 777 },
    { key = "scalar", data = scalar, dtype = C.PSV_DTYPE_F32, ctype = "const float *", shape = {}, n = 1 },
}

-- --- save ------------------------------------------------------------------------------------
local saver = ffi.gc(lib.psv_saver_new(), lib.psv_saver_free)
assert(saver ~= nil, "psv_saver_new: out of memory")
for _, a in ipairs(arrays) do
    local ndim = #a.shape
    local shape = ndim > 0 and ffi.new("int64_t[?]", ndim, a.shape) or nil
    check(lib.psv_saver_add(saver, a.key, a.data, a.dtype, shape, ndim), "psv_saver_add(" .. a.key .. ")")
end
expect(tonumber(lib.psv_saver_count(saver)) == #arrays, "psv_saver_count")
local path = out_prefix .. ".npz"
local opts = ffi.gc(lib.psv_save_options_new(), lib.psv_save_options_free)
check(lib.psv_save_options_set_threads(opts, 2), "psv_save_options_set_threads")
check(lib.psv_saver_save(saver, path, opts), "psv_saver_save")

-- Duplicate keys are refused, with a message naming the key.
local st = lib.psv_saver_add(saver, "wave", wave, C.PSV_DTYPE_F64, ffi.new("int64_t[1]", 1), 1)
expect(st == C.PSV_ERR_INVALID_ARG and last_error():find("wave", 1, true), "duplicate key refused")

-- --- restore ---------------------------------------------------------------------------------
local out = ffi.new("psv_archive *[1]")
check(lib.psv_restore(path, nil, out), "psv_restore")
local archive = ffi.gc(out[0], lib.psv_free)
expect(tonumber(lib.psv_archive_count(archive)) == #arrays, "psv_archive_count")

local block_len = ffi.new("size_t[1]")
local block = address(lib.psv_archive_block(archive, block_len))
block_len = tonumber(block_len[0])

local index = ffi.new("size_t[1]")
for _, a in ipairs(arrays) do
    check(lib.psv_archive_find(archive, a.key, index), "psv_archive_find(" .. a.key .. ")")
    local i = index[0]
    expect(ffi.string(lib.psv_archive_key(archive, i)) == a.key, a.key .. ": key")
    expect(lib.psv_archive_dtype(archive, i) == a.dtype, a.key .. ": dtype")
    local ndim = tonumber(lib.psv_archive_ndim(archive, i))
    expect(ndim == #a.shape, a.key .. ": ndim")
    local shape = lib.psv_archive_shape(archive, i)
    for d = 1, math.min(ndim, #a.shape) do
        expect(tonumber(shape[d - 1]) == a.shape[d], a.key .. ": shape[" .. (d - 1) .. "]")
    end
    local itemsize = ffi.sizeof(a.data) / a.n
    expect(tonumber(lib.psv_archive_nbytes(archive, i)) == a.n * itemsize, a.key .. ": nbytes")
    local p = lib.psv_archive_data(archive, i)
    local at = address(p)
    expect(at % 64 == 0, string.format("%s: data at 0x%x is not 64-byte aligned", a.key, at))
    expect(at >= block and at + a.n * itemsize <= block + block_len, a.key .. ": data outside the block")
    local got = ffi.cast(a.ctype, p)
    local bad = 0
    for k = 0, a.n - 1 do
        if got[k] ~= a.data[k] then
            bad = bad + 1
        end
    end
    expect(bad == 0, string.format("%s: %d of %d values differ", a.key, bad, a.n))
    print(string.format("  %-6s %-4s ndim %d  %8d values  at 0x%x  ok", a.key,
        ffi.string(lib.psv_archive_descr(archive, i)), ndim, a.n, at))
end

-- Spot checks through typed pointers.
check(lib.psv_archive_find(archive, "grid", index), "psv_archive_find(grid)")
local g = ffi.cast("const int32_t *", lib.psv_archive_data(archive, index[0]))
expect(g[299 * COLS + 699] == 299 * 100000 - 699 * 3 - 7, "grid[299][699]")

-- Errors: a missing key and a missing file.
expect(lib.psv_archive_find(archive, "nope", index) == C.PSV_ERR_NOT_FOUND, "find(missing key)")
local missing = ffi.new("psv_archive *[1]")
st = lib.psv_restore(out_prefix .. "_does_not_exist", nil, missing)
expect(st == C.PSV_ERR_IO and missing[0] == nil, "restore(missing file) is PSV_ERR_IO with *out = NULL")
print("expected error: " .. ffi.string(lib.psv_status_str(st)) .. ": " .. last_error())

-- Free deterministically (the ffi.gc finalizers are removed first so nothing is freed twice).
lib.psv_free(ffi.gc(archive, nil))
lib.psv_saver_free(ffi.gc(saver, nil))
lib.psv_save_options_free(ffi.gc(opts, nil))
os.remove(path)

if failures > 0 then
    io.stderr:write(string.format("psv_example.lua: %d check(s) failed\n", failures))
    os.exit(1)
end
print("luajit: all values, dtypes, shapes and 64-byte alignments check out")
