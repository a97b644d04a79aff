"""Load check of `mlx-acestep serve` on the tiny model: 20 queued jobs from 4 concurrent clients.

    python benchmarks/bench_serve.py [--jobs 20] [--clients 4]

Every job must finish without an error; the process's resident memory is sampled after each job, to show it
stays flat (a leak would grow it with every job).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args(argv)
    from test_server import KEY, Server  # the tests' loopback server harness

    from mlx_acestep.pipeline import ACEStep
    from mlx_acestep.server import make_app

    tmp = Path(tempfile.mkdtemp())
    pipe = ACEStep.from_pretrained("tiny", cache_dir=tmp / "cache")
    server = Server(make_app(pipe, tmp / "out", api_key=KEY, queue_size=args.jobs))
    errors, memory, done = [], [], []
    start = time.perf_counter()

    def client(n: int):
        for j in range(args.jobs // args.clients):
            status, env = server.json(
                "POST", "/release_task", {"prompt": f"client {n} job {j}", "audio_duration": 10, "batch_size": 1}
            )
            if status != 200:
                errors.append(env)
                continue
            state, items = server.wait(env["data"]["task_id"], timeout=600)
            (done if state == 1 else errors).append(items)
            memory.append(rss_mb())

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.stop()
    result = {
        "jobs": args.jobs,
        "clients": args.clients,
        "succeeded": len(done),
        "errors": len(errors),
        "seconds": round(time.perf_counter() - start, 1),
        "rss_mb_first": round(memory[0], 1),
        "rss_mb_last": round(memory[-1], 1),
        "rss_mb_max": round(max(memory), 1),
        # where it stands at each quarter of the run: a leak keeps climbing, a warming cache levels off
        "rss_mb_by_quarter": [round(memory[min(len(memory) - 1, len(memory) * q // 4)], 1) for q in (1, 2, 3, 4)],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
