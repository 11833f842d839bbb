"""Two LLVM operations numba does not expose, for the compiled evaluators (no Python fallback: they
only run inside ``@njit`` code)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def float32_from_bits(typingctx, bits):
    """The low 32 bits of an integer read as a float32 (2**n is ``(n + 127) << 23``)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def fma32(typingctx, a, b, c):
    """``a * b + c`` in float32 with one rounding (LLVM's ``fma``): always fused, so a product
    summed in a vectorised loop and in a scalar one rounds alike (a contraction LLVM may choose
    differs between the two)."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32, f32]), "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(a, b, c), codegen
