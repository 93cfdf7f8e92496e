"""Time of one Learned Primal-Dual training step: pirecon's ray transforms against ODL's torch OperatorModule.

LPD-ellipses protocol: 128 x 128 image on [-64, 64]^2 mm, 30 angles, 183
detectors (``lpd_ellipses_geometry``); images ``random_ellipses((128, 128),
batch, seed=0)``, data ``Physics(A, GaussianNoise(relative=0.05)).simulate(x,
seed=1)``. Model: ``LearnedPrimalDual()`` at paper size (10 iterations, 5 + 5
memory channels, 32 hidden, PReLU), built after ``torch.manual_seed(0)`` so
every row starts from the same weights; Adam, lr 1e-3, mean squared error
against the true images. One step is ``zero_grad``, forward, backward and
``optimizer.step()``. Three operators, measured in the same run:

* ``sparse``: ``RayTransform(geometry, backend="sparse")``;
* ``astra``: ``RayTransform(geometry, backend="astra")``;
* ``odl``: ODL's ``odl.contrib.torch.OperatorModule`` wrapping
  ``odl.applications.tomo.RayTransform`` (``impl="astra_cpu"``) and another
  wrapping its adjoint; the model's operator calls these modules directly, so
  the forward pass and the gradients go through ODL's own autograd
  (``OperatorFunction``), not pirecon's.

Each row runs in its own fresh Python process (``--row NAME --json``, collected
by the parent), so that its memory is its own: one warm-up step, then
``--repeats`` timed steps; the time is their median. Memory on the CPU:
"peak RSS increase" is ``ru_maxrss`` (``resource.getrusage``) read after the
last step minus the resident set size read from ``/proc/self/statm`` just
before the first (warm-up) step, i.e. after the operator, the data, the model,
the optimiser and the operator norm (``operator_scale``) exist: what the
training steps (autograd graph, gradients, Adam state, workspace) add on top of
that. "process peak RSS" is ``ru_maxrss`` itself, the peak resident set of the
whole row process (Python, torch, ODL/ASTRA libraries included). Both are
OS-level figures: freed memory the allocator keeps counts. On CUDA
(``--device cuda``) the ``sparse`` and ``astra`` rows report
``torch.cuda.max_memory_allocated`` over the steps minus the allocated memory
before them, and the peak allocated memory; the ``odl`` row runs on the CPU
(ODL evaluates through NumPy) and reports RSS, marked as such.

Same work: every row trains from the same weights on the same images (its data
simulated with its own operator), so the losses of every step must agree
across rows; their relative differences are printed. The loss alone can be a
weak check (an LPD whose blocks end in zero-initialised convolutions outputs
zero at first, so its step-1 loss is ``mean(x^2)`` for any operator), so an
untimed probe runs after the measurement: the same model, built after
``torch.manual_seed(1)`` with every block's last convolution re-initialised by
torch's default (non-zero) initialisation, one forward and backward pass; the
norm of each parameter tensor's gradient goes through ``A`` and ``A^T`` in
every iteration and is compared across rows (pirecon's Joseph matrix and
ASTRA's ``linear`` projector differ by about 2e-4 relative, which moves the most
sensitive of these norms by about 1e-3; a wrong sinogram orientation moves
some by a factor of about 3).

    python experiments/benchmarks/training_step.py [--repeats 5] [--threads 2] [--batch 5]
        [--rows sparse astra odl] [--device cpu] [--out DIR]

Prints a Markdown table to stdout (progress goes to stderr); ``--out DIR``
also writes ``training_step.csv`` and ``training_step.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("sparse", "astra", "odl")
LABELS = {"sparse": "pirecon `sparse`", "astra": "pirecon `astra`",
          "odl": "ODL OperatorModule (`astra_cpu`)"}
MIB = 2.0 ** 20
SCRIPT = Path(__file__).resolve()


def log(message: str) -> None:
    print(f"[training_step] {message}", file=sys.stderr, flush=True)


# -- the ODL operator --------------------------------------------------------------------------------------------


def odl_module_operator(geometry, impl: str = "astra_cpu"):
    """A ``pirecon`` ``LinearOperator`` whose application *is* ODL's torch ``OperatorModule``.

    ``__call__`` and ``adjoint`` call the two modules directly, so autograd records ODL's
    ``OperatorFunction`` nodes (backward: ODL's adjoint, item by item through NumPy) and
    never pirecon's ``_ApplyLinear``. ``geometry`` is set so that ``operator_scale`` finds the
    ray transform norm of the geometry, as for a ``RayTransform``.
    """
    from odl.contrib.torch import OperatorModule

    from pirecon.ct.odl_backend import odl_ray_transform
    from pirecon.operators import LinearOperator

    class OdlModuleOperator(LinearOperator):
        def __init__(self):
            super().__init__(geometry.image_shape, geometry.sinogram_shape)
            self.geometry = geometry
            ray_trafo = odl_ray_transform(geometry, impl)
            self.forward_module = OperatorModule(ray_trafo)
            self.adjoint_module = OperatorModule(ray_trafo.adjoint)
            # ODL's adjoint is the one of its weighted inner products, c_range <A x, y> = c_domain <x, A* y>;
            # pirecon's backends apply the Euclidean transpose (c_domain / c_range) A* (OperatorModule's
            # backward of the forward module applies that factor itself).
            self.adjoint_scale = ray_trafo.domain.weighting.const / ray_trafo.range.weighting.const

        def __call__(self, x):
            # pirecon images (row 0 at the top, columns along x) -> ODL's [ix, iy] (see pirecon.ct.odl_backend)
            return self.forward_module(x.flip(-2).transpose(-2, -1))

        forward = __call__

        def adjoint(self, y):
            out = self.adjoint_module(y).transpose(-2, -1).flip(-2)
            return out if self.adjoint_scale == 1.0 else out * self.adjoint_scale

        def _forward(self, x):
            import torch

            with torch.no_grad():
                return self(x)

        def _adjoint(self, y):
            import torch

            with torch.no_grad():
                return self.adjoint(y)

        def __repr__(self):
            return f"OdlModuleOperator({geometry!r}, impl={impl!r})"

    return OdlModuleOperator()


# -- one row, in its own process ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    """Current resident set size, from ``/proc/self/statm`` (Linux)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    """``ru_maxrss`` of this process in bytes (the kernel reports KiB on Linux, bytes on macOS)."""
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def run_row(name: str, args) -> dict:
    """Build the operator, data, model and optimiser of row ``name``; time ``1 + repeats`` training steps."""
    import gc

    import torch
    from torch.nn import functional as F

    from _timing import median_time
    from pirecon.ct import RayTransform, lpd_ellipses_geometry
    from pirecon.models import LearnedPrimalDual, operator_scale
    from pirecon.noise import GaussianNoise
    from pirecon.phantoms import random_ellipses
    from pirecon.physics import Physics

    torch.set_num_threads(args.threads)
    device = torch.device("cpu" if name == "odl" else args.device)  # ODL evaluates through NumPy on the host
    cuda = device.type == "cuda"
    geometry = lpd_ellipses_geometry()
    log(f"{name}: building the operator on {device}")
    op = odl_module_operator(geometry) if name == "odl" else RayTransform(geometry, backend=name)
    physics = Physics(op, GaussianNoise(relative=0.05), "ct", {"geometry": geometry})
    x = random_ellipses(geometry.image_shape, args.batch, seed=0)
    with torch.no_grad():
        y = physics.simulate(x, seed=1)  # on the CPU with the row's own operator, then moved
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    model = LearnedPrimalDual().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    operator_scale(physics)  # ||A|| by power iteration, once per geometry: set-up, not part of a step
    # which autograd node records A x: pirecon's _ApplyLinear, or ODL's OperatorFunction for the odl row
    autograd_node = type(op(torch.zeros(1, 1, *geometry.image_shape, device=device, requires_grad=True)).grad_fn)

    losses: list[float] = []
    step_seconds: list[float] = []  # each step's own wall time, for the spread (median_time gives the median)

    def step():
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(y, physics).image, x)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        losses.append(loss.item())
        step_seconds.append(time.perf_counter() - start)
        log(f"{name}: step {len(losses)} of {1 + args.repeats}, {step_seconds[-1]:.2f} s, loss {losses[-1]:.6g}")

    gc.collect()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes()
        maxrss_before = _maxrss_bytes()
    seconds = median_time(step, args.repeats)  # one warm-up step, then the median of `repeats`
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        memory = {"memory_kind": "CUDA allocated", "peak_increase_bytes": peak - before, "process_peak_bytes": peak}
    else:
        peak = _maxrss_bytes()
        memory = {"memory_kind": "RSS", "peak_increase_bytes": peak - before, "process_peak_bytes": peak,
                  # the process peak was reached before the steps: the increase is then an upper bound only
                  "peak_before_steps": peak <= maxrss_before}
    probe_loss, probe_grad_norms = probe(LearnedPrimalDual, physics, x, y)  # after the memory readings
    operator_seconds = operator_work(op, x, y, model.iterations, cuda)
    try:
        import odl

        odl_version = odl.__version__
    except ImportError:  # the sparse and astra rows run without ODL
        odl_version = None

    return {
        "row": name, "device": str(device), "seconds_per_step": seconds, "batch": args.batch,
        "autograd_node": autograd_node.__name__,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "loss_first": losses[0], "loss_last": losses[-1], "losses": losses, "step_seconds": step_seconds,
        "probe_loss": probe_loss, "probe_grad_norms": probe_grad_norms, "operator_seconds": operator_seconds,
        **memory,
        "machine": {"torch": torch.__version__, "odl": odl_version, "python": platform.python_version(),
                    "cuda_device": torch.cuda.get_device_name(device) if cuda else None},
    }


def operator_work(op, x, y, iterations: int, cuda: bool) -> float:
    """Median time of the operator applications one LPD step makes: each iteration applies ``A`` and
    ``A^T`` once in the forward pass and once more each in the backward pass (the backward of ``A`` is
    ``A^T`` and vice versa), so ``2 * iterations`` of each, at the step's batch size, without autograd."""
    import torch

    from _timing import median_time

    def work():
        with torch.no_grad():
            for _ in range(2 * iterations):
                op(x)
                op.adjoint(y)
        if cuda:
            torch.cuda.synchronize()

    return median_time(work, 3)


def probe(model_class, physics, x, y) -> tuple[float, list[float]]:
    """Loss and per-parameter-tensor gradient norms of one untimed forward and backward pass.

    The model's blocks end in convolutions re-initialised with torch's default (non-zero) initialisation,
    whatever the model's own initialisation, so that the output and every gradient depend on ``A`` and
    ``A^T`` in every iteration (see the module docstring).
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(1)
    model = model_class().to(x.device)
    for block in [*model.primal_blocks, *model.dual_blocks]:
        convolutions = [m for m in block.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        convolutions[-1].reset_parameters()  # torch's default initialisation, whatever the model's own
    loss = F.mse_loss(model(y, physics).image, x)
    loss.backward()
    return loss.item(), [float(p.grad.double().norm()) for p in model.parameters()]


# -- the parent: one process per row, one table ------------------------------------------------------------------


# On Linux a child's ru_maxrss starts at its parent's peak RSS (fork copies the parent's high-water mark, exec
# keeps it). Each row therefore runs as a grandchild, through this small launcher process, so that its ru_maxrss
# is its own even when the caller (say, a test session) is large.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def _child(name: str, args) -> dict:
    command = [sys.executable, str(SCRIPT), "--row", name, "--json", "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--batch", str(args.batch), "--device", args.device]
    log(f"{name}: running {shlex.join(command)}")
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.PIPE,
                          text=True)  # stderr (progress) passes through
    if done.returncode != 0:
        raise SystemExit(f"training_step: the {name!r} row failed (exit status {done.returncode}); see stderr above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else abs(a - b)


def agreement(results: list[dict]) -> dict:
    """Largest relative differences to the first row: training loss at step 1, at the last step and over all
    steps; the probe's loss and per-parameter-tensor gradient norms."""
    ref = results[0]
    diffs = [[_relative(a, b) for a, b in zip(r["losses"], ref["losses"])] for r in results[1:]]
    return {"loss_first": max((d[0] for d in diffs), default=0.0),
            "loss_last": max((d[-1] for d in diffs), default=0.0),
            "loss_any_step": max((max(d) for d in diffs), default=0.0),
            "probe_loss": max((_relative(r["probe_loss"], ref["probe_loss"]) for r in results[1:]), default=0.0),
            "probe_grad_norms": max((_grad_difference(r, ref) for r in results[1:]), default=0.0)}


def _grad_difference(row: dict, ref: dict) -> float:
    """Largest relative difference of the probe's per-parameter-tensor gradient norms."""
    return max(_relative(a, b) for a, b in zip(row["probe_grad_norms"], ref["probe_grad_norms"]))


def report(results: list[dict], args, command: str) -> str:
    by_row = {r["row"]: r for r in results}
    sparse = by_row.get("sparse")
    cuda = args.device.startswith("cuda")
    first = results[0]
    lines = [
        f"LPD training step (forward, backward, Adam), LPD-ellipses: 128x128, 30 angles, 183 detectors, "
        f"batch {args.batch}, float32, {args.threads} threads, median of {args.repeats} steps after 1 warm-up",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: torch {first['machine']['torch']}, ODL {first['machine']['odl']}, "
        f"Python {first['machine']['python']}, {args.threads} torch threads, "
        f"CPU count {os.cpu_count()} ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} "
        f"usable), {_cpu_model()}, {platform.system()} {platform.machine()}, "
        + ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"))
        + (f", GPU {next((r['machine']['cuda_device'] for r in results if r['machine']['cuda_device']), '?')}"
           if cuda else ""),
        "",
    ]
    if cuda:
        lines += ["| backend | device | s/step | x slower than sparse | peak memory increase (MiB) "
                  "| process peak memory (MiB) |", "|---|---|---:|---:|---:|---:|"]
    else:
        lines += ["| backend | s/step | x slower than sparse | peak RSS increase (MiB) | process peak RSS (MiB) |",
                  "|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['seconds_per_step'] / sparse['seconds_per_step']:.2f}" if sparse else "n/a"
        cells = [LABELS[r["row"]]] + ([f"{r['device']} ({r['memory_kind']})"] if cuda else []) + [
            f"{r['seconds_per_step']:.3f}", ratio,
            f"{r['peak_increase_bytes'] / MIB:.1f}", f"{r['process_peak_bytes'] / MIB:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if cuda:
        caption = ("Memory: CUDA rows: torch.cuda.max_memory_allocated over the warm-up and timed steps minus the "
                   "memory allocated just before them, and the peak allocated memory; CPU rows: as for --device cpu "
                   "(ru_maxrss after the steps minus the RSS from /proc/self/statm just before the first step, and "
                   "ru_maxrss). The ODL row runs on the CPU.")
    else:
        caption = ("Memory: peak RSS increase = ru_maxrss (getrusage) after the last step minus the RSS "
                   "(/proc/self/statm) just before the first (warm-up) step, with operator, data, model, optimiser "
                   "and operator norm already built; process peak RSS = ru_maxrss of the row's own process "
                   "(each row runs in a fresh Python process).")
    lines += ["", caption, "", "Timed steps, fastest to slowest (s): " + ", ".join(
        f"{r['row']} {min(r['step_seconds'][1:]):.3f} to {max(r['step_seconds'][1:]):.3f}" for r in results)
        + "; warm-up step: " + ", ".join(f"{r['row']} {r['step_seconds'][0]:.3f}" for r in results) + "."]
    lines += ["", "Autograd node of `A x`: "
              + ", ".join(f"{r['row']} `{r['autograd_node']}`" for r in results) + "."]
    if sparse:
        lines += ["", f"Operator work inside one step ({2 * 10} applications of `A` and of `A^T` at batch "
                      f"{args.batch}, timed on their own, median of 3):", "",
                  "| backend | operator s/step | x slower than sparse | share of the step |", "|---|---:|---:|---:|"]
        for r in results:
            lines.append(f"| {LABELS[r['row']]} | {r['operator_seconds']:.3f} | "
                         f"{r['operator_seconds'] / sparse['operator_seconds']:.1f} | "
                         f"{r['operator_seconds'] / r['seconds_per_step']:.0%} |")
    if any(r.get("peak_before_steps") for r in results):
        flagged = ", ".join(r["row"] for r in results if r.get("peak_before_steps"))
        lines.append(f"Warning: in row(s) {flagged} the process peak RSS was reached before the steps, so the "
                     "increase is an upper bound.")
    if sparse and "odl" in by_row:
        ratio = by_row["odl"]["seconds_per_step"] / sparse["seconds_per_step"]
        where = " (ODL on the CPU, sparse on CUDA)" if cuda else ""
        lines += ["", f"**ODL OperatorModule / sparse: {ratio:.2f}x** per training step{where} (target >= 5x)"]
    if len(results) > 1:
        agree = agreement(results)
        steps = args.repeats + 1
        lines += ["", f"Same work (largest relative difference to `{results[0]['row']}`): training loss at step 1 "
                      f"{agree['loss_first']:.1e}, at step {steps} {agree['loss_last']:.1e}, at any step "
                      f"{agree['loss_any_step']:.1e}; probe (untimed forward and backward pass, non-zero output "
                      f"convolutions): loss {agree['probe_loss']:.1e}, gradient norm of each parameter tensor "
                      f"{agree['probe_grad_norms']:.1e} (largest of {len(results[0]['probe_grad_norms'])}). "
                      f"Loss at step {steps}: " + ", ".join(f"{r['row']} {r['loss_last']:.7g}" for r in results)
                      + "; probe loss: " + ", ".join(f"{r['row']} {r['probe_loss']:.7g}" for r in results) + "."]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, results: list[dict], text: str) -> None:
    from pirecon._atomic import atomic_path

    columns = ["backend", "device", "seconds_per_step", "slower_than_sparse", "memory_kind", "peak_increase_mib",
               "process_peak_mib", "loss_first", "loss_last", "loss_last_relative_difference", "probe_loss",
               "probe_loss_relative_difference", "probe_grad_norms_largest_relative_difference", "autograd_node",
               "batch", "threads", "repeats"]
    sparse = next((r for r in results if r["row"] == "sparse"), None)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in results:
        writer.writerow([r["row"], r["device"], f"{r['seconds_per_step']:.6f}",
                         f"{r['seconds_per_step'] / sparse['seconds_per_step']:.4f}" if sparse else "",
                         r["memory_kind"], f"{r['peak_increase_bytes'] / MIB:.2f}",
                         f"{r['process_peak_bytes'] / MIB:.2f}", f"{r['loss_first']:.9g}",
                         f"{r['loss_last']:.9g}", f"{_relative(r['loss_last'], results[0]['loss_last']):.3e}",
                         f"{r['probe_loss']:.9g}", f"{_relative(r['probe_loss'], results[0]['probe_loss']):.3e}",
                         f"{_grad_difference(r, results[0]):.3e}", r["autograd_node"], r["batch"], r["threads"],
                         r["repeats"]])
    with atomic_path(out / "training_step.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    with atomic_path(out / "training_step.md") as tmp:
        tmp.write_text("# LPD training step: pirecon ray transforms vs ODL OperatorModule\n\n" + text)


def _command(argv) -> str:
    try:
        script = os.path.relpath(SCRIPT)
    except ValueError:
        script = str(SCRIPT)
    return shlex.join(["python", script, *argv])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after one warm-up step (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="operators to time, in order")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the odl row always runs on the CPU)")
    parser.add_argument("--out", type=Path, help="also write training_step.csv and training_step.md here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # internal: run one row in this process
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.batch < 1:
        parser.error("--repeats, --threads and --batch must be positive")

    if args.row:  # child mode: this process measures one row
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                parser.error("--device cuda: torch.cuda.is_available() is False")
        result = run_row(args.row, args)
        print(json.dumps(result) if args.json else result)
        return result

    # parent mode: one fresh process per row, then the table
    results = [_child(name, args) for name in args.rows]
    text = report(results, args, _command(argv))
    summary = {"rows": results, "agreement": agreement(results), "command": _command(argv)}
    print(json.dumps(summary, indent=2) if args.json else text, end="" if not args.json else "\n")
    if args.out:
        write_outputs(args.out, results, text)
        log(f"wrote {args.out / 'training_step.csv'} and {args.out / 'training_step.md'}")
    return summary


if __name__ == "__main__":
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    main()
