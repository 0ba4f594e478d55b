r"""Numba source of the series contraction ``dg_ss``, written for a literal number of coefficients.

``dot_general`` of two series is the Cauchy product of contractions, c_r = sum_{i+j=r} A_i . B_j
(A read as [G, M, C], B as [G, C, N] per coefficient and direction, one stride per group, so
a transposed operand is read in place; ``array_codegen`` has the arena layout, and its table
entry is this kernel with a runtime K1). Compared with pairing every (i, j) in its own loop it
computes the same sums in the same order, faster, using two facts:

* **Flattened coefficient rows.** Per (direction, batch index) B is split once into real and
  imaginary blocks ``[C, K1*N]`` (coefficient-major, then n; the library's ``pack_series``). For one lhs coefficient A_i[m, c]
  the products with every B_j, j <= k - i, land in the result rows i .. k, which are contiguous:
  one loop of (K1 - i)*N multiply-adds that LLVM vectorises, instead of K1 - i loops of N.
* **Real constant terms.** Constant terms of series are the unperturbed real run (the engine
  refuses series inputs whose constant term has an imaginary part, and every op keeps them
  real), so A_0 and B_0 are real: the products A_0 B_j and A_i B_0 need two real
  multiply-adds instead of four, and A_0 B_0 one. At order 3 that is 25 real multiply-adds per
  lhs element and output column instead of 40.

From ``ROWS_FROM`` coefficients on, ``ROWS`` result rows m are computed together so that each
loaded B element serves all of them (the loops are long there; at low orders the rows fit the
cache anyway and the extra accumulators cost more than they save). Summation order per output
element: over c, then over i, so results depend neither on the tiling nor, coefficient by
coefficient, on the truncation order.
"""

from __future__ import annotations

import textwrap

#: number of coefficients from which result rows are computed ``ROWS`` at a time
ROWS_FROM, ROWS = 8, 4

_HEAD = """
@numba.njit(cache=True, nogil=True, error_model="numpy")
def dg_ss(R, S, I, K1_, nb, G, M, N, C, o, x0, xj, xd, xg, xm, xc, y0, yj, yd, yg, yc, yn):
    \"\"\"Cauchy product of contractions, K1 = {k1} coefficients (backends/array_contract.py).\"\"\"
    K1 = {k1}
    F = S.view(np.float64)
    size = G * M * N
    L = K1 * N
    br = np.empty((C, L))
    bi = np.empty((C, L))
{accumulators}
    chk = 0.0
    for d in range(nb):
        for g in range(G):
            pack_series(F, br, bi, y0 + d * yd + g * yg, C, K1, N, yj, yc, yn)
            m0 = 0
            while m0 < M:
                rows = {rows} if M - m0 >= {rows} else 1
"""

_TILE = """
{zero}
for c in range(C):
    yr = br[c]
    yi = bi[c]
    a = 2 * (x0 + d * xd + g * xg + m0 * xm + c * xc)
{i0}
    for i in range(1, K1):
        at = a + 2 * i * xj
        s0 = i * N
        n_i = L - s0
{loads}
        for q in range(N):  # B_0 real
            u = yr[q]
{real_b0}
        zr = yr[N:]  # views starting at 0: indices provably >= 0, so loops vectorise
        zi = yi[N:]
{shift}
        for q in range(n_i - N):
            u = zr[q]
            v = zi[q]
{full}
{stores}
"""

_STORE = """
for r in range(K1):
    out = 2 * (o + (r * nb + d) * size + (g * M + m0 + {m}) * N)
    for nn in range(N):
        vr = sr{m}[r * N + nn]
        vi = si{m}[r * N + nn]
        F[out + 2 * nn] = vr
        F[out + 2 * nn + 1] = vi
        chk += (vr - vr) + (vi - vi)
"""


def _tile(rows: int) -> str:
    """Result rows m0 .. m0+rows-1: accumulators sr{mb}/si{mb} (1-d, contiguous: vectorised
    loops), each loaded B element used by every row."""
    rng = range(rows)
    zero = "\n".join(f"sr{m}[:] = 0.0\nsi{m}[:] = 0.0" for m in rng)
    i0 = "\n".join([f"    p{m} = F[a + {2 * m} * xm]" for m in rng]
                   + ["    for q in range(L):  # i = 0: A_0 real, and so is B_0 (q < N)",
                      "        u = yr[q]"] + [f"        sr{m}[q] += p{m} * u" for m in rng]
                   + ["    zi = yi[N:]"] + [f"    wi{m} = si{m}[N:]" for m in rng]
                   + ["    for q in range(L - N):", "        v = zi[q]"]
                   + [f"        wi{m}[q] += p{m} * v" for m in rng])
    loads = "\n".join(line for m in rng for line in (
        f"        pr{m} = F[at + {2 * m} * xm]", f"        pi{m} = F[at + {2 * m} * xm + 1]",
        f"        ur{m} = sr{m}[s0:]", f"        ui{m} = si{m}[s0:]"))
    real_b0 = "\n".join(line for m in rng for line in (
        f"            ur{m}[q] += pr{m} * u", f"            ui{m}[q] += pi{m} * u"))
    shift = "\n".join(f"        vr{m} = ur{m}[N:]\n        vi{m} = ui{m}[N:]" for m in rng)
    full = "\n".join(line for m in rng for line in (
        f"            vr{m}[q] += pr{m} * u - pi{m} * v",
        f"            vi{m}[q] += pr{m} * v + pi{m} * u"))
    stores = "\n".join(_STORE.format(m=m).strip() for m in rng)
    return _TILE.format(zero=zero, i0=i0, loads=loads, real_b0=real_b0, full=full, shift=shift,
                        stores=stores)


def dg_ss_source(k1: int | None) -> str:
    """``dg_ss`` for exactly ``k1`` coefficients (module doc); ``None``: the order-generic
    kernel of the table (``K1`` read from its argument, one row at a time)."""
    rows = ROWS if k1 is not None and k1 >= ROWS_FROM else 1
    accumulators = "\n".join(f"    sr{m} = np.empty(K1 * N)\n    si{m} = np.empty(K1 * N)"
                             for m in range(rows))
    head = _HEAD.format(k1="K1_" if k1 is None else k1, rows=rows,
                        accumulators=accumulators).strip("\n")
    pad = " " * 16
    if rows > 1:
        body = "\n".join([f"if rows == {rows}:", textwrap.indent(_tile(rows).strip(), "    "),
                          "else:", textwrap.indent(_tile(1).strip(), "    ")])
    else:
        body = _tile(1).strip()
    tail = "\n".join([textwrap.indent(body, pad), pad + "m0 += rows",
                      "    return NONFINITE if chk != 0.0 else 0", ""])
    return head + "\n" + tail


__all__ = ["ROWS", "ROWS_FROM", "dg_ss_source"]
