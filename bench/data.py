"""Real-data path: load + partition time and peak memory per format, and one local epoch's samples/s.

1. load + partition: ``build_dataset`` (read the released files, partition,
   turn the rank's clients into tensors) for each format, on files fabricated
   at the released sizes in ``--dir`` (tests/data/fabricate.py; LEAF at
   ``--leaf-scale`` of LEAF's size, JSON being slow to write) and on Debian's
   real Fashion-MNIST. Each measurement is a fresh process acting as rank 0 of
   8, so ``peak MB`` is that process's peak RSS (VmHWM); ``base MB`` is its RSS
   after the imports (torch alone is ~220 MB) and ``held MB`` the bytes of the
   client tensors it keeps.
2. CIFAR-10, 80 clients, ``mpiexec -n 8``: peak RSS of every rank.
3. One local epoch (batch 128) of the CIFAR model on one client's real
   tensors: the project's path (ClientData.train_batch + algorithms.sgd.local_sgd
   on a [1, P] FlatModel stack) against a plain torch loop (module, torch.optim.SGD,
   the same batches) in the same process, alternating, ``--repeats`` times.
   Also shown, to explain the figure: the path without the registry's
   ``forward_stack`` (FlatModel's vmap). samples/s from process CPU
   time (robust on a shared machine) and from wall time; best of the repeats.

Run: ``python bench/data.py`` (``--skip-fabricate`` to reuse ``--dir``).
Target: project path >= 0.95 of the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
# name: (data keys, model); sizes as FedEM's configs where they exist
SPECS = {
    "cifar10": ({"n_clients": 80, "partition": "label_group", "n_groups": 3}, "mobilenet_v2"),
    "cifar100": ({"n_clients": 100, "partition": "pachinko"}, "mobilenet_v2"),
    "mnist": ({"n_clients": 100, "partition": "pathological"}, "femnist_cnn"),
    "emnist": ({"n_clients": 100, "partition": "label_group", "fraction": 0.1}, "femnist_cnn"),
    "femnist": ({"n_clients": 150}, "femnist_cnn"),
    "shakespeare": ({"n_clients": 250}, "lstm"),
    "fashion_mnist": ({"n_clients": 100, "partition": "pathological"}, "femnist_cnn"),
}


def _status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak: starts afresh at exec, unlike ru_maxrss) of this process, MB."""
    from fedmtl_hpc.hpc import memory_kib
    return memory_kib(key) / 1024


def fabricate(base: Path, leaf_scale: float) -> None:
    """Released-size files (CIFAR-10/100 60k, MNIST 70k, EMNIST byclass 814k); LEAF scaled."""
    import numpy as np
    from tests.data import fabricate as fab
    t0 = time.perf_counter()
    fab.write_cifar10(base / "cifar10", per_batch=10000, n_test=10000)
    fab.write_cifar100(base / "cifar100", 50000, 10000)
    fab.write_mnist(base / "mnist", 60000, 10000, level=1)
    fab.write_emnist(base / "emnist", "byclass", 697932, 116323, level=1)
    rng = np.random.default_rng(0)
    writers = max(int(3597 * leaf_scale), 160)  # LEAF FEMNIST: 3,597 writers, 805,263 samples
    fab.write_femnist(base / "femnist", {f"f{i:04d}_{i % 50:02d}": int(rng.integers(100, 350))
                                         for i in range(writers)}, per_file=50)
    roles = max(int(1129 * leaf_scale), 260)  # LEAF Shakespeare: 1,129 roles, 4.2M windows
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ,.;:!?'\n"))
    fab.write_shakespeare(base / "shakespeare", {f"PLAY_{i}_ROLE": "".join(rng.choice(letters, int(rng.integers(
        600, 7000)))) for i in range(roles)}, per_file=100)
    print(f"# fabricated {base} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def _config(name: str, root: str):
    from fedmtl_hpc.config import parse_config
    data, model = SPECS[name]
    return parse_config({"data": {"name": name, "root": root, "unseen_clients": 0, **data},
                         "model": {"name": model}, "run": {"seed": 1}})


def worker_load(args) -> dict:
    """One rank of a build: seconds, RSS before / peak, bytes of the held client tensors."""
    import torch  # noqa: F401 - the baseline includes torch, as in a run
    from fedmtl_hpc.data import build_dataset
    import fedmtl_hpc.models  # noqa: F401
    rank, size = int(os.environ.get("PMI_RANK", args.rank)), int(os.environ.get("PMI_SIZE", args.size))
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    ds = build_dataset(_config(args.name, args.root), rank, size)
    seconds = time.perf_counter() - t0
    held = sum(t.numel() * t.element_size() for c in ds.clients.values()
               for t in vars(c).values() if hasattr(t, "element_size"))
    return {"name": args.name, "rank": rank, "size": size, "seconds": seconds, "base_mb": base,
            "peak_mb": _status_mb("VmHWM"), "held_mb": held / 2**20,
            "clients": len(ds.clients), "kind": ds.partition_info()["kind"]}


def _run(cmd: list[str]) -> list[dict]:
    out = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if out.returncode:
        raise SystemExit(f"bench/data.py: {' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return [json.loads(x[7:]) for x in out.stdout.splitlines() if x.startswith("RESULT ")]


def _sgd_epoch(model: str, data, threads: int, repeats: int) -> dict:
    """samples/s of local_sgd variants and of a plain loop over the same batches."""
    import torch
    import torch.nn.functional as F
    from fedmtl_hpc.algorithms.sgd import batches, local_sgd
    from fedmtl_hpc.config import TrainConfig
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.models.cnn import CIFAR10CNN
    from fedmtl_hpc.models.mobilenet import MobileNetV2
    from fedmtl_hpc.models.resnet import ResNet18
    from fedmtl_hpc.params import FlatModel
    torch.set_num_threads(threads)
    cfg = TrainConfig(lr=0.01, batch_size=128, local_epochs=1)
    shape, classes = tuple(data.x_train.shape[1:]), 10
    looped = FlatModel(build_model(model, shape, classes))
    bare_cls = {"mobilenet_v2": MobileNetV2, "cifar_cnn": CIFAR10CNN, "resnet18": ResNet18}[model]
    bare = FlatModel(bare_cls(classes))  # the class itself, without the registry's forward_stack
    theta0 = looped.flatten_module(looped.module)[None].clone()
    n = data.n_train

    def project(flat):
        th = theta0.clone()
        local_sgd(flat, th, data, cfg, torch.Generator().manual_seed(1))

    def plain():
        m = build_model(model, shape, classes)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta0[0], m.parameters())
        opt = torch.optim.SGD(m.parameters(), lr=cfg.lr)
        for idx in batches(n, cfg, torch.Generator().manual_seed(1), "cpu"):
            x, y = data.train_batch(idx)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()

    variants = {"plain torch loop": plain, "project (registry forward_stack)": lambda: project(looped),
                "project, FlatModel vmap (no forward_stack)": lambda: project(bare)}
    times = {k: [] for k in variants}
    for r in range(repeats):
        for k, f in variants.items():
            c0, w0 = time.process_time(), time.perf_counter()
            f()
            times[k].append((time.process_time() - c0, time.perf_counter() - w0))
    return {k: {"cpu": n / min(t[0] for t in v), "wall": n / min(t[1] for t in v)} for k, v in times.items()}


def worker_epoch(args) -> dict:
    from fedmtl_hpc.data import build_dataset
    ds = build_dataset(_config("cifar10", args.root), 0, 8)
    data = ds.client(0)
    out = {"n_train": data.n_train, "threads": args.threads}
    for model in args.models.split(","):
        out[model] = _sgd_epoch(model, data, args.threads, args.repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/fedmtl-bench-data", help="fabricated files (written if absent)")
    ap.add_argument("--leaf-scale", type=float, default=0.05, help="share of LEAF's writers / roles fabricated")
    ap.add_argument("--skip-fabricate", action="store_true")
    ap.add_argument("--models", default="mobilenet_v2,cifar_cnn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the epoch benchmark (runs use 1/rank)")
    ap.add_argument("--sections", default="load,ranks,epoch", help="which of load, ranks, epoch to run")
    ap.add_argument("--worker", choices=("load", "epoch"))
    ap.add_argument("--name"), ap.add_argument("--root")
    ap.add_argument("--rank", type=int, default=0), ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--out", help="worker: write the result to OUT/<rank>.json")
    args = ap.parse_args()
    if args.worker:
        res = worker_load(args) if args.worker == "load" else worker_epoch(args)
        if args.out:  # one file per rank: 8 ranks' stdout lines can interleave under mpiexec
            Path(args.out, f"{res.get('rank', 0)}.json").write_text(json.dumps(res))
        else:
            print("RESULT " + json.dumps(res), flush=True)
        return
    base = Path(args.dir)
    if not args.skip_fabricate and not (base / "shakespeare").is_dir():
        fabricate(base, args.leaf_scale)
    me = [sys.executable, str(Path(__file__).resolve())]
    print(f"# bench/data.py  {time.strftime('%Y-%m-%d %H:%M')}  cores {os.cpu_count()}  "
          f"load avg {os.getloadavg()[0]:.1f}")
    if "load" in args.sections:
        print(f"{'format':<14} {'partition':<26} {'s load+split':>12} {'base MB':>8} {'peak MB':>8} {'held MB':>8} "
              f"clients")
    roots = {n: str(base / n) for n in SPECS if n != "fashion_mnist"}
    roots["fashion_mnist"] = "/usr/share/datasets/fashion-mnist"
    for name, root in roots.items() if "load" in args.sections else ():
        if not Path(root).is_dir():
            print(f"{name:<14} skipped: {root} absent")
            continue
        r = _run([*me, "--worker", "load", "--name", name, "--root", root])[0]
        print(f"{name:<14} {r['kind']:<26} {r['seconds']:>12.2f} {r['base_mb']:>8.0f} {r['peak_mb']:>8.0f} "
              f"{r['held_mb']:>8.1f} {r['clients']} of rank 0/8", flush=True)
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    if "ranks" in args.sections:
        _ranks(me, mpiexec, roots["cifar10"])
    if "epoch" in args.sections:
        _epochs(me, args, roots["cifar10"])


def _ranks(me: list[str], mpiexec: str, root: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        _run([mpiexec, "-n", "8", *me, "--worker", "load", "--name", "cifar10", "--root", root, "--out", out])
        ranks = sorted((json.loads(p.read_text()) for p in Path(out).glob("*.json")), key=lambda r: r["rank"])
    print("# CIFAR-10, 80 clients on 8 ranks (mpiexec -n 8): peak RSS per rank, MB: "
          + " ".join(f"{r['peak_mb']:.0f}" for r in ranks)
          + f"; held {min(r['held_mb'] for r in ranks):.0f}-{max(r['held_mb'] for r in ranks):.0f} MB; "
          f"{max(r['seconds'] for r in ranks):.1f} s (8 ranks on {os.cpu_count()} cores)")


def _epochs(me: list[str], args, root: str) -> None:
    res = _run([*me, "--worker", "epoch", "--root", root, "--models", args.models,
                "--repeats", str(args.repeats), "--threads", str(args.threads)])[0]
    print(f"# one local epoch, batch 128, client 0 of CIFAR-10/80 ({res['n_train']} train images), "
          f"{res['threads']} thread(s), best of {args.repeats}; samples/s by CPU time (wall)")
    for model in args.models.split(","):
        plain = res[model]["plain torch loop"]
        for k, v in res[model].items():
            print(f"{model:<13} {k:<46} {v['cpu']:>8.1f} ({v['wall']:>7.1f})  ratio {v['cpu'] / plain['cpu']:.2f} "
                  f"({v['wall'] / plain['wall']:.2f})")
        ratio = res[model]["project (registry forward_stack)"]["cpu"] / plain["cpu"]
        print(f"target: {model} project path >= 0.95 of the plain loop: {ratio:.2f} "
              f"{'met' if ratio >= 0.95 else 'NOT met'}")


if __name__ == "__main__":
    main()
