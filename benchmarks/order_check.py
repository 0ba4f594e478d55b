"""Are the order-k coefficients of a whole microgpt run right? Checks (a) backends, (b) retraining,
(c) rescaling of ``circuitsketch.sketch.order_check`` (issue 13, docs/reproduce.md "Fig. 1").

    python benchmarks/order_check.py --steps 1000 --order 100 --reference-steps 100 --out oc

Direction v: ``--direction deletion`` (default) is 1_D, D = the names containing ``--contains``
(Fig. 2's set); ``--direction psi`` is Fig. 1's first random direction psi_0 (complex: no
retraining, so checks (a) and (c) only). The measurement is Fig. 1's: the loss on the first
training name (``--measure-name`` to change it). Check (a) runs the reference backend on the
first ``--reference-steps`` steps only (the reference needs ~4-7 s per step at k = 100 on the
default model; 0 skips it). With ``--out DIR`` every finished stage is kept in DIR/stages (a
rerun of the same command resumes) and the numbers go to DIR/order_check.json. Exit status 1
if a check fails its tolerance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from circuitsketch.frontends.microgpt_array import build_task_array, loss_measurement_array
from circuitsketch.frontends.microgpt_data import MicrogptConfig, names_for_steps, prepare
from circuitsketch.sketch.directions import direction as random_direction
from circuitsketch.sketch.order_check import envelope, order_check


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = MicrogptConfig()
    parser.add_argument("--steps", type=int, default=defaults.n_steps, help="training steps")
    for name in ("n_embd", "n_head", "block_size", "mlp_width"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            default=getattr(defaults, name))
    parser.add_argument("--order", type=int, default=100, help="Taylor order k")
    parser.add_argument("--direction", choices=("deletion", "psi"), default="deletion")
    parser.add_argument("--contains", default="x", help="D = the names containing this")
    parser.add_argument("--seed", type=int, default=0, help="seed of psi (--direction psi)")
    parser.add_argument("--measure-name", default=None,
                        help="loss on this name (default: the first training name, as Fig. 1)")
    parser.add_argument("--scale", type=float, default=0.7, help="a of check (c), not 2^j")
    parser.add_argument("--reference-steps", type=int, default=100,
                        help="steps of check (a)'s run (0: skip (a))")
    parser.add_argument("--weights", default=None,
                        help="w,w,... of check (b) (default: 0 and 0.25..0.9 x the radius)")
    parser.add_argument("--backend", default="numba-cpu", help="the backend checked")
    parser.add_argument("--tolerance", type=float, default=1e-9,
                        help="largest (a) and (c) mismatch relative to the envelope")
    parser.add_argument("--every", type=int, default=5, help="print every EVERY-th order")
    parser.add_argument("--out", type=Path, default=None, help="directory for JSON and stages")
    return parser.parse_args()


def _task(args: argparse.Namespace, steps: int):
    config = MicrogptConfig(n_embd=args.n_embd, n_head=args.n_head, block_size=args.block_size,
                            mlp_width=args.mlp_width)
    return config, build_task_array(config, steps)


def _direction(args: argparse.Namespace, task) -> tuple[np.ndarray, str]:
    if args.direction == "psi":
        return random_direction(args.seed, 0, task.n_examples), f"psi_0 (seed {args.seed})"
    members = [i for i, name in enumerate(task.example_labels) if args.contains in name]
    if not members:
        raise SystemExit(f"no training name among {task.n_examples} contains {args.contains!r}")
    v = np.zeros(task.n_examples)
    v[members] = 1.0
    return v, f"1_D, D = the {len(members)} names containing {args.contains!r} (steps {members})"


def _print_table(check, every: int) -> None:
    k = check.order
    size, scale = np.abs(check.coefficients), envelope(check.coefficients)
    rescaled, backends, resolution = check.rescaling(), check.backends(), check.resolution()
    print("    r      |c_r|        e_r   (a) vs ref  (c) rescale  (b) resolution")
    for r in sorted(set(range(0, k + 1, max(1, every))) | {k}):
        a = f"{backends[r]:11.2e}" if backends is not None else f"{'-':>11}"
        b = f"{resolution[r]:14.2e}" if resolution is not None else f"{'-':>14}"
        print(f"  {r:3d}  {size[r]:9.3e}  {scale[r]:9.3e}  {a}  {rescaled[r]:11.2e}  {b}")
    print(f"  max over r: (c) {rescaled.max():.3g} (at r = {int(rescaled.argmax())})" +
          ("" if backends is None else f", (a) {backends.max():.3g} (at r = "
           f"{int(backends.argmax())}, {check.reference_steps} steps)"))
    if resolution is not None:
        tested = np.flatnonzero(resolution <= 1e-2)
        print(f"  (b) pins c_r to 1% or better for r <= {tested.max() if tested.size else '-'}; "
              f"residuals |S_k(w) - f(w v)| vs the estimated tail:")
        for w, e, tail in zip(check.weights, check.residuals()[:, -1], check.tails()):
            print(f"      w = {w:7.4f}: {abs(e):9.2e}   tail {tail:9.2e}")


def main() -> int:
    args = _arguments()
    start = time.monotonic()
    config, task = _task(args, args.steps)
    data = prepare(config)
    name = args.measure_name or names_for_steps(data, 1)[0]
    measurement = loss_measurement_array(data, config, name)
    v, what = _direction(args, task)
    short = None
    if 0 < args.reference_steps < args.steps:
        short = _task(args, args.reference_steps)[1]
    weights = None if args.weights is None else [float(w) for w in args.weights.split(",")]
    print(f"order {args.order}, {args.steps} steps, loss on {name!r}, v = {what}, a = "
          f"{args.scale}, backend {args.backend}")
    check = order_check(task, measurement, v, args.order, scale=args.scale,
                        backend=args.backend, reference_task=short,
                        reference_backend="reference" if args.reference_steps else None,
                        weights=weights, checkpoint=args.out / "stages" if args.out else None)
    _print_table(check, args.every)
    failures = check.failures(backend_tolerance=args.tolerance,
                              rescaling_tolerance=args.tolerance)
    print("\n".join(failures) if failures else "all checks pass")
    print(f"radius estimate {check.radius():.4g}; stage times (s): " +
          ", ".join(f"{k} {t:.1f}" for k, t in check.timings.items()) +
          f"; total {time.monotonic() - start:.1f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "order_check.json").write_text(json.dumps(
            {"steps": args.steps, "measurement": name, "direction": what,
             "failures": failures, **check.to_dict()}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
