# psv.jl — libpsv from Julia with ccall: save Julia arrays into one .npz, restore them into one
# 64-byte-aligned block and look at them through unsafe_wrap, with a finalizer calling psv_free.
#
# NOT RUN. No Julia toolchain could be installed where this file was written, so it has never been
# executed or compiled by Julia; its syntax was only checked with a third-party Julia grammar
# (lezer-julia). It was written line by line against include/psv.h (0.1.0, ABI 100) and is not
# part of `make test`. Expect to fix small things the first time it runs:
#
#     PSV_LIBRARY=$PWD/target/release/libpsv.so julia examples/julia/psv.jl build/julia_demo
#
# Type mapping used for every ccall below (psv.h -> Julia):
#   psv_status, psv_dtype (int32_t) -> Int32      size_t -> Csize_t      int64_t * -> Ptr{Int64}
#   bool -> Bool (1 byte)     const char * in -> Cstring     const char * out -> Cstring
#   uint64_t -> UInt64        uint32_t -> UInt32             opaque handles -> Ptr{Cvoid}
#
# Julia arrays are column-major. save() writes every array of 2 or more dimensions with
# fortran_order = true and its Julia shape (through psv_saver_add_descr, since psv_saver_add has
# no order flag), so numpy reads a[i, j] as Julia's a[i, j]. restore() wraps Fortran-ordered
# arrays as they are and C-ordered ones (everything numpy writes by default) as a lazy
# PermutedDimsArray over the reversed shape: no copy either way.

module Psv

export save, restore, Archive, PsvError

const libpsv = get(ENV, "PSV_LIBRARY", "libpsv")

# --- constants, copied from include/psv.h (check_header compares them with the header) ----------

const PSV_OK = Int32(0)
const PSV_ERR_NULL_ARG = Int32(1)
const PSV_ERR_INVALID_ARG = Int32(2)
const PSV_ERR_BAD_DTYPE = Int32(3)
const PSV_ERR_OVERFLOW = Int32(4)
const PSV_ERR_IO = Int32(5)
const PSV_ERR_FORMAT = Int32(6)
const PSV_ERR_UNSUPPORTED = Int32(7)
const PSV_ERR_LIMIT = Int32(8)
const PSV_ERR_NOT_FOUND = Int32(9)
const PSV_ERR_NOMEM = Int32(10)
const PSV_ERR_ABORTED = Int32(11)
const PSV_ERR_PANIC = Int32(12)
const PSV_ERR_CRC = Int32(13)

const PSV_DTYPE_INVALID = Int32(-1)
const PSV_DTYPE_BOOL = Int32(1)
const PSV_DTYPE_I8 = Int32(2)
const PSV_DTYPE_I16 = Int32(3)
const PSV_DTYPE_I32 = Int32(4)
const PSV_DTYPE_I64 = Int32(5)
const PSV_DTYPE_U8 = Int32(6)
const PSV_DTYPE_U16 = Int32(7)
const PSV_DTYPE_U32 = Int32(8)
const PSV_DTYPE_U64 = Int32(9)
const PSV_DTYPE_F16 = Int32(10)
const PSV_DTYPE_F32 = Int32(11)
const PSV_DTYPE_F64 = Int32(12)
const PSV_DTYPE_C64 = Int32(13)
const PSV_DTYPE_C128 = Int32(14)
const PSV_DTYPE_OTHER = Int32(15)

const PSV_ABI_VERSION = UInt32(100)

const DTYPE_OF = Dict{DataType,Int32}(
    Bool => PSV_DTYPE_BOOL,
    Int8 => PSV_DTYPE_I8, Int16 => PSV_DTYPE_I16, Int32 => PSV_DTYPE_I32, Int64 => PSV_DTYPE_I64,
    UInt8 => PSV_DTYPE_U8, UInt16 => PSV_DTYPE_U16, UInt32 => PSV_DTYPE_U32, UInt64 => PSV_DTYPE_U64,
    Float16 => PSV_DTYPE_F16, Float32 => PSV_DTYPE_F32, Float64 => PSV_DTYPE_F64,
    ComplexF32 => PSV_DTYPE_C64, ComplexF64 => PSV_DTYPE_C128,
)
const TYPE_OF = Dict{Int32,DataType}(code => T for (T, code) in DTYPE_OF)

# numpy descr strings for psv_saver_add_descr (native order; this file assumes little-endian).
const NUMPY_KIND = Dict{DataType,Char}(
    Bool => 'b', Int8 => 'i', Int16 => 'i', Int32 => 'i', Int64 => 'i',
    UInt8 => 'u', UInt16 => 'u', UInt32 => 'u', UInt64 => 'u',
    Float16 => 'f', Float32 => 'f', Float64 => 'f', ComplexF32 => 'c', ComplexF64 => 'c',
)
function numpy_descr(::Type{T}) where {T}
    ENDIAN_BOM == 0x04030201 || error("psv.jl builds little-endian descrs only")
    return string(sizeof(T) == 1 ? '|' : '<', NUMPY_KIND[T], sizeof(T))
end

"""
    check_header(path)

Compares every integer `#define PSV_...` of psv.h with the constant of the same name here.
"""
function check_header(path::AbstractString)
    for m in eachmatch(r"^#define (PSV_\w+) (-?\d+)$"m, read(path, String))
        name = Symbol(m.captures[1])
        isdefined(@__MODULE__, name) || continue
        mine = getfield(@__MODULE__, name)
        mine == parse(Int, m.captures[2]) || error("psv.jl: $name is $mine here, $(m.captures[2]) in $path")
    end
    return nothing
end

# --- errors -------------------------------------------------------------------------------------

"""A failed libpsv call: the status code, the call and the library's message."""
struct PsvError <: Exception
    status::Int32
    call::String
    message::String
end

status_name(st::Integer) = unsafe_string(ccall((:psv_status_str, libpsv), Cstring, (Int32,), st))

Base.showerror(io::IO, e::PsvError) = print(io, e.call, ": ", status_name(e.status), ": ", e.message)

# The calling thread's last message. Read it right after the failing ccall, before anything that
# could yield: Julia tasks may migrate between threads at yield points, and the message is
# thread-local in libpsv.
function last_error_message()
    n = ccall((:psv_last_error_message, libpsv), Csize_t, (Ptr{UInt8}, Csize_t), C_NULL, 0)
    buf = Vector{UInt8}(undef, n + 1)
    ccall((:psv_last_error_message, libpsv), Csize_t, (Ptr{UInt8}, Csize_t), buf, n + 1)
    return String(buf[1:n])
end

function check(st::Int32, call::AbstractString)
    st == PSV_OK || throw(PsvError(st, call, last_error_message()))
    return nothing
end

version() = unsafe_string(ccall((:psv_version, libpsv), Cstring, ()))
abi_version() = ccall((:psv_abi_version, libpsv), UInt32, ())

# --- save ---------------------------------------------------------------------------------------

# Adds one array to the saver. The saver borrows `a`'s memory until psv_saver_free: the caller
# keeps `a` rooted (GC.@preserve) until then. Julia's GC does not move arrays.
function add!(saver::Ptr{Cvoid}, key::String, a::Array{T}; c_order_shape::Bool=false) where {T}
    code = get(DTYPE_OF, T, nothing)
    code === nothing && throw(ArgumentError("psv.jl: no numpy dtype for element type $T (key $key)"))
    nd = ndims(a)
    if nd <= 1 || c_order_shape
        # 0-d and 1-d arrays are the same in both orders. With c_order_shape the Julia array's
        # memory is declared as a C-order array of the reversed shape (numpy sees the transpose).
        # Arrays (not pointer(x)) are passed so that ccall roots them for the call; a 0-d
        # array passes an empty shape vector, which psv.h allows (shape is not read for ndim 0).
        shape = Int64[reverse(size(a))...]
        st = ccall((:psv_saver_add, libpsv), Int32,
                   (Ptr{Cvoid}, Cstring, Ptr{Cvoid}, Int32, Ptr{Int64}, Csize_t),
                   saver, key, a, code, shape, nd)
        check(st, "psv_saver_add($key)")
    else
        shape = Int64[size(a)...]
        st = ccall((:psv_saver_add_descr, libpsv), Int32,
                   (Ptr{Cvoid}, Cstring, Ptr{Cvoid}, Csize_t, Cstring, Ptr{Int64}, Csize_t, Bool),
                   saver, key, a, sizeof(a), numpy_descr(T), shape, nd, true)
        check(st, "psv_saver_add_descr($key)")
    end
    return nothing
end

"""
    save(path, arrays; threads=0, compression=0, c_order=())

Saves `arrays` (an iterable of `key => Array` pairs, e.g. a Dict) into one .npz at `path`
without copying them. Arrays with 2 or more dimensions keep their Julia shape and are marked
fortran_order, except the keys listed in `c_order`, which are declared as C-order arrays of the
reversed shape (numpy then sees their transpose, as a C program would).
"""
function save(path::AbstractString, arrays; threads::Integer=0, compression::Integer=0, c_order=())
    saver = ccall((:psv_saver_new, libpsv), Ptr{Cvoid}, ())
    saver == C_NULL && throw(OutOfMemoryError())
    opts = C_NULL
    keep = Any[]  # every array the saver borrows: rooted until psv_saver_free has run
    GC.@preserve keep begin
        try
            for (k, x) in arrays
                arr = x isa Array ? x : collect(x)  # contiguous memory (a copy for views, ranges)
                push!(keep, arr)
                add!(saver, String(k), arr; c_order_shape=(String(k) in c_order))
            end
            opts = ccall((:psv_save_options_new, libpsv), Ptr{Cvoid}, ())
            opts == C_NULL && throw(OutOfMemoryError())
            check(ccall((:psv_save_options_set_threads, libpsv), Int32, (Ptr{Cvoid}, Csize_t), opts, threads),
                  "psv_save_options_set_threads")
            check(ccall((:psv_save_options_set_compression, libpsv), Int32, (Ptr{Cvoid}, Cint), opts, compression),
                  "psv_save_options_set_compression")
            st = ccall((:psv_saver_save, libpsv), Int32, (Ptr{Cvoid}, Cstring, Ptr{Cvoid}), saver, path, opts)
            check(st, "psv_saver_save")
        finally
            ccall((:psv_save_options_free, libpsv), Cvoid, (Ptr{Cvoid},), opts)
            ccall((:psv_saver_free, libpsv), Cvoid, (Ptr{Cvoid},), saver)  # ends the borrows
        end
    end
    return nothing
end

# --- restore ------------------------------------------------------------------------------------

"""
A restored .npz: one block holding every array. psv_free runs in the finalizer (or at
`close`). Arrays from `a[key]` are `ArchiveArray`s that keep their Archive alive.
"""
mutable struct Archive
    ptr::Ptr{Cvoid}
    function Archive(ptr::Ptr{Cvoid})
        ptr == C_NULL && throw(ArgumentError("Archive(C_NULL)"))
        a = new(ptr)
        finalizer(a) do x
            # ccall in a finalizer is allowed; psv_free never yields or throws.
            ccall((:psv_free, libpsv), Cvoid, (Ptr{Cvoid},), x.ptr)
            x.ptr = C_NULL
        end
        return a
    end
end

"""
    close(a::Archive)

Frees the block now. Every array obtained from `a` becomes invalid: use only when none is left.
"""
function Base.close(a::Archive)
    ccall((:psv_free, libpsv), Cvoid, (Ptr{Cvoid},), a.ptr)
    a.ptr = C_NULL
    return nothing
end

"""A zero-copy view of one restored array that keeps its Archive (and so the block) alive."""
struct ArchiveArray{T,N,A<:AbstractArray{T,N}} <: AbstractArray{T,N}
    data::A
    archive::Archive
end
ArchiveArray(data::AbstractArray{T,N}, archive::Archive) where {T,N} =
    ArchiveArray{T,N,typeof(data)}(data, archive)
Base.size(x::ArchiveArray) = size(x.data)
Base.IndexStyle(::Type{<:ArchiveArray{T,N,A}}) where {T,N,A} = IndexStyle(A)
Base.@propagate_inbounds Base.getindex(x::ArchiveArray, i::Int) = x.data[i]
Base.@propagate_inbounds Base.getindex(x::ArchiveArray{T,N}, I::Vararg{Int,N}) where {T,N} = x.data[I...]
Base.parent(x::ArchiveArray) = x.data

"""
    restore(path; threads=0, verify_crc=true) -> Archive
"""
function restore(path::AbstractString; threads::Integer=0, verify_crc::Bool=true)
    opts = ccall((:psv_restore_options_new, libpsv), Ptr{Cvoid}, ())
    opts == C_NULL && throw(OutOfMemoryError())
    out = Ref{Ptr{Cvoid}}(C_NULL)
    try
        check(ccall((:psv_restore_options_set_threads, libpsv), Int32, (Ptr{Cvoid}, Csize_t), opts, threads),
              "psv_restore_options_set_threads")
        check(ccall((:psv_restore_options_set_verify_crc, libpsv), Int32, (Ptr{Cvoid}, Bool), opts, verify_crc),
              "psv_restore_options_set_verify_crc")
        st = ccall((:psv_restore, libpsv), Int32, (Cstring, Ptr{Cvoid}, Ref{Ptr{Cvoid}}), path, opts, out)
        check(st, "psv_restore")  # on failure psv_restore has set out[] to C_NULL
    finally
        ccall((:psv_restore_options_free, libpsv), Cvoid, (Ptr{Cvoid},), opts)
    end
    return Archive(out[])
end

Base.length(a::Archive) = Int(ccall((:psv_archive_count, libpsv), Csize_t, (Ptr{Cvoid},), a.ptr))

# Indices are 1-based here and 0-based in C.
function key(a::Archive, i::Integer)
    1 <= i <= length(a) || throw(BoundsError(a, i))
    return unsafe_string(ccall((:psv_archive_key, libpsv), Cstring, (Ptr{Cvoid}, Csize_t), a.ptr, i - 1))
end

function descr(a::Archive, i::Integer)
    1 <= i <= length(a) || throw(BoundsError(a, i))
    return unsafe_string(ccall((:psv_archive_descr, libpsv), Cstring, (Ptr{Cvoid}, Csize_t), a.ptr, i - 1))
end

Base.keys(a::Archive) = [key(a, i) for i in 1:length(a)]

"""The 1-based index of `k`, or `nothing`."""
function findkey(a::Archive, k::AbstractString)
    idx = Ref{Csize_t}(0)
    st = ccall((:psv_archive_find, libpsv), Int32, (Ptr{Cvoid}, Cstring, Ref{Csize_t}), a.ptr, k, idx)
    st == PSV_ERR_NOT_FOUND && return nothing
    check(st, "psv_archive_find($k)")
    return Int(idx[]) + 1
end

"""The address of array `i`'s data (64-byte aligned)."""
function data_pointer(a::Archive, i::Integer)
    1 <= i <= length(a) || throw(BoundsError(a, i))
    return ccall((:psv_archive_data, libpsv), Ptr{Cvoid}, (Ptr{Cvoid}, Csize_t), a.ptr, i - 1)
end

"""
    array(a, i)

Array `i` (1-based) as a zero-copy Julia array: Fortran-ordered data is wrapped with its shape;
C-ordered data is wrapped with the reversed shape and presented through PermutedDimsArray, so
indices mean what they mean in numpy. Only native numeric dtypes map to Julia element types.
"""
function array(a::Archive, i::Integer)
    1 <= i <= length(a) || throw(BoundsError(a, i))
    c = Csize_t(i - 1)
    code = ccall((:psv_archive_dtype, libpsv), Int32, (Ptr{Cvoid}, Csize_t), a.ptr, c)
    T = get(TYPE_OF, code, nothing)
    T === nothing && throw(PsvError(PSV_ERR_BAD_DTYPE, "Psv.array",
                                    "array '$(key(a, i))' has descr $(descr(a, i)): no Julia element type"))
    nd = Int(ccall((:psv_archive_ndim, libpsv), Csize_t, (Ptr{Cvoid}, Csize_t), a.ptr, c))
    shp = ccall((:psv_archive_shape, libpsv), Ptr{Int64}, (Ptr{Cvoid}, Csize_t), a.ptr, c)
    dims = ntuple(d -> Int(unsafe_load(shp, d)), nd)  # shp is NULL only when nd == 0
    p = Ptr{T}(data_pointer(a, i))
    p == C_NULL && throw(PsvError(PSV_ERR_INVALID_ARG, "Psv.array", "array '$(key(a, i))' has no data"))
    fortran = ccall((:psv_archive_fortran_order, libpsv), Bool, (Ptr{Cvoid}, Csize_t), a.ptr, c)
    if nd <= 1 || fortran
        data = unsafe_wrap(Array, p, dims; own=false)  # own=false: psv_free releases the block
    else
        raw = unsafe_wrap(Array, p, reverse(dims); own=false)
        data = PermutedDimsArray(raw, ntuple(d -> nd + 1 - d, nd))
    end
    return ArchiveArray(data, a)
end

function Base.getindex(a::Archive, k::AbstractString)
    i = findkey(a, k)
    i === nothing && throw(KeyError(k))
    return array(a, i)
end

# --- demo and self-check ------------------------------------------------------------------------

function main(args)
    prefix = isempty(args) ? "psv_julia_demo" : args[1]
    path = prefix * ".npz"
    header = joinpath(@__DIR__, "..", "..", "include", "psv.h")
    isfile(header) && check_header(header)
    println("libpsv ", version(), " via Julia ", VERSION)
    abi_version() == PSV_ABI_VERSION || error("libpsv ABI $(abi_version()) != $(PSV_ABI_VERSION)")

    wave = [i * 0.25 - 1000 for i in 0:999_999]                        # Vector{Float64}, 1e6
    grid = Int32[r * 100_000 - c * 3 - 7 for r in 0:299, c in 0:699]   # 300×700 Matrix{Int32}
    flags = [isodd(i) for i in 1:77]                                    # Vector{Bool}
    scalar = fill(2.5f0)                                                # 0-d Array{Float32,0}
    save(path, Dict("wave" => wave, "grid" => grid, "grid_c" => grid, "flags" => flags, "scalar" => scalar);
         threads=2, c_order=("grid_c",))

    a = restore(path; threads=2)
    sort(keys(a)) == sort(["wave", "grid", "grid_c", "flags", "scalar"]) || error("keys: $(keys(a))")
    for i in 1:length(a)
        UInt(data_pointer(a, i)) % 64 == 0 || error("$(key(a, i)) is not 64-byte aligned")
    end
    w = a["wave"]
    (size(w) == (1_000_000,) && w == wave) || error("wave differs")
    g = a["grid"]
    (size(g) == (300, 700) && g == grid) || error("grid differs")
    gc = a["grid_c"]  # saved as C order (700, 300): the transpose, viewed through PermutedDimsArray
    (size(gc) == (700, 300) && gc == permutedims(grid)) || error("grid_c differs")
    a["flags"] == flags || error("flags differ")
    s = a["scalar"]
    (ndims(s) == 0 && s[] == 2.5f0) || error("scalar differs")
    println("wave[end] = ", w[end], ", grid[300, 700] = ", g[300, 700], ", descr(grid) = ",
            descr(a, findkey(a, "grid")))

    try
        restore(prefix * "_does_not_exist")
        error("restoring a missing file did not fail")
    catch e
        (e isa PsvError && e.status == PSV_ERR_IO) || rethrow()
        println("expected error: ", sprint(showerror, e))
    end

    w = g = gc = s = nothing
    a = nothing
    GC.gc()  # runs the finalizer: psv_free
    rm(path)
    println("julia: all values, shapes and 64-byte alignments check out")
    return 0
end

end # module Psv

if abspath(PROGRAM_FILE) == @__FILE__
    exit(Psv.main(ARGS))
end
