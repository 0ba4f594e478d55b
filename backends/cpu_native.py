"""Hand-written LLVM for the Numba CPU tape interpreter's hottest paths (CPU only; the CUDA
target runs the snippets of ``kernel_source``).

* ``prefetch_slot``: a software prefetch hint (``llvm.prefetch``) for every cache line of one
  slot: the interpreter asks for the next instruction's (and a ``dot``'s next pair's) series
  operands while it computes, since a block's slots far exceed L2.
* ``cauchy_add2``, ``cauchy_add4``, ``cauchy_add7``: the Cauchy product of series of order 1, 3
  and 6 accumulated into ``Y`` (a ``dot``'s series*series pair), as explicit ``<4 x double>``
  arithmetic on two directions at a time. LLVM does not vectorise the snippet's unrolled loop
  (it would need a runtime alias check per pair of rows), and the per-(j, i) loops it does
  vectorise pay an alias check at each entry; written out here the order-3 pair runs ~3x faster
  (micro-benchmark, data in L1), with the same bits: each product is numba's complex product
  (re = ar*br - ai*bi, im = ar*bi + ai*br, no FMA) and the sums run in the snippet's order.
  Other orders run the snippet's loop (each order here is one more unrolled copy to compile).
"""

from __future__ import annotations

import hashlib
import pathlib

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: identifies this file's code in the kernels that import it (see numba_cpu.CPU_TARGET)
SOURCE_HASH = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]

_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F64 = ir.DoubleType()


@intrinsic
def prefetch_line(typingctx, arr, slot, offset):
    """Prefetch (for reading, into all cache levels) the byte ``offset`` of ``arr[slot]``."""
    sig = types.void(arr, slot, offset)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        stride = cgutils.unpack_tuple(builder, array.strides, signature.args[0].ndim)[0]
        at = builder.add(builder.mul(args[1], stride), args[2])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32]), "llvm.prefetch.p0")
        builder.call(fn, [builder.gep(builder.bitcast(array.data, _I8P), [at]), _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, inline="always")
def prefetch_slot(A, s):
    """Prefetch every cache line of ``A[s]`` (one slot: all its coefficients and directions)."""
    for offset in range(0, A.strides[0], 64):
        prefetch_line(A, s, offset)


def _cmul(builder, x, y, n):
    """Complex products of two vectors of n/2 interleaved complex numbers, as numba computes
    them: re = xr*yr - xi*yi, im = xr*yi + xi*yr."""
    lanes = lambda idx: ir.Constant(ir.VectorType(_I32, n), idx)  # noqa: E731
    y_re = builder.shuffle_vector(y, y, lanes([i - i % 2 for i in range(n)]))
    y_im = builder.shuffle_vector(y, y, lanes([i - i % 2 + 1 for i in range(n)]))
    x_swap = builder.shuffle_vector(x, x, lanes([i ^ 1 for i in range(n)]))
    t1 = builder.fmul(x, y_re)       # xr*yr, xi*yr
    t2 = builder.fmul(x_swap, y_im)  # xi*yi, xr*yi
    return builder.shuffle_vector(builder.fsub(t1, t2), builder.fadd(t2, t1),
                                  lanes([i if i % 2 == 0 else n + i for i in range(n)]))


def _cauchy_add(k: int):
    """The intrinsic ``cauchy_add{k}``: Y[y] += A[a] * G[g] for series of k coefficients (K1 == k,
    not checked) over ``nd`` directions: y_j += a_0 g_j + a_1 g_{j-1} + ... + a_j g_0, added in
    that order. Y[y] must not overlap A[a] or G[g] (the memory plan never writes a slot an
    instruction reads)."""

    def cauchy_add(typingctx, Y, y, A, a, G, g, K1, nd):
        sig = types.void(Y, y, A, a, G, g, K1, nd)

        def codegen(context, builder, signature, args):
            def rows(i):  # pointers to the k coefficient rows of slot args[i + 1] of array args[i]
                array = context.make_array(signature.args[i])(context, builder, args[i])
                strides = cgutils.unpack_tuple(builder, array.strides, 3)
                base = builder.gep(builder.bitcast(array.data, _I8P), [builder.mul(args[i + 1], strides[0])])
                return [builder.gep(base, [builder.mul(_I64(j), strides[1])]) for j in range(k)]

            out, left, right = rows(0), rows(2), rows(4)
            nd = context.cast(builder, args[7], signature.args[7], types.int64)

            def chunk(d, n):  # n doubles: the n/2 directions from d
                vec = ir.VectorType(_F64, n).as_pointer()
                at = builder.mul(d, _I64(16))
                ptr = lambda row: builder.bitcast(builder.gep(row, [at]), vec)  # noqa: E731
                av = [builder.load(ptr(r), align=8) for r in left]
                gv = [builder.load(ptr(r), align=8) for r in right]
                for j in range(k):
                    acc = builder.load(ptr(out[j]), align=8)
                    for i in range(j + 1):
                        acc = builder.fadd(acc, _cmul(builder, av[i], gv[j - i], n))
                    builder.store(acc, ptr(out[j]), align=8)

            even = builder.and_(nd, _I64(-2))
            with cgutils.for_range_slice(builder, _I64(0), even, _I64(2)) as (d, _):
                chunk(d, 4)
            with builder.if_then(builder.icmp_signed("!=", even, nd)):
                chunk(even, 2)
            return context.get_dummy_value()

        return sig, codegen

    cauchy_add.__name__ = cauchy_add.__qualname__ = f"cauchy_add{k}"
    return intrinsic(cauchy_add)


cauchy_add2 = _cauchy_add(2)
cauchy_add4 = _cauchy_add(4)
cauchy_add7 = _cauchy_add(7)
