"""Shared helpers of the benchmark scripts (run as `python benchmarks/<name>.py`): timing, the JSON record."""
import json
import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_json(path, rows: dict, load, args) -> None:
    """Writes the rows of a run with the load average and the arguments to ``path`` (nothing for None)."""
    if path:
        path.write_text(json.dumps({"rows": rows, "load": load, "args": {k: str(v) for k, v in vars(args).items()}},
                                   indent=1))
