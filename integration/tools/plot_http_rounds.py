"""Plot keel.http's benchmark round by round, from the JSON its bench writes.

Why a curve here: the table gives medians; the rounds show how much this shared 2-core machine
moves the figures from one round to the next: absolute requests/s, and also the keel/peer
ratio of one round (contenders measured back to back). A single round says little; the
median over alternating rounds is the figure to read, and its spread is worth seeing.

    python3 packages/http/bench/run.py --rounds 5 --duration 3 --json /tmp/http-bench.json
    pip install matplotlib
    python3 integration/tools/plot_http_rounds.py /tmp/http-bench.json docs/plots/http-rounds.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REQUESTS_PER_SECOND = 0  # position in each round's [req/s, p99 ms, CPU µs/req]
KEEL = "keel"
FIGURE_INCHES = (13.0, 7.0)
DPI = 110


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if "results" not in data or KEEL not in data["results"]:
        raise SystemExit(f"{path}: not keel.http bench JSON (no results for {KEEL!r})")
    return data


def plot(data: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict[str, dict[str, Any]] = data["results"]
    cells = list(results[KEEL])
    figure, axes = plt.subplots(2, len(cells), figsize=FIGURE_INCHES, sharex=True,
                                squeeze=False)
    for column, cell in enumerate(cells):
        keel_rounds = [entry[REQUESTS_PER_SECOND] for entry in results[KEEL][cell]["rounds"]]
        for server, cells_of_server in results.items():
            rounds = [entry[REQUESTS_PER_SECOND] for entry in cells_of_server[cell]["rounds"]]
            numbers = range(1, len(rounds) + 1)
            axes[0][column].plot(numbers, rounds, marker="o", label=server)
            if server != KEEL:
                ratios = [keel / peer for keel, peer in zip(keel_rounds, rounds, strict=True)]
                axes[1][column].plot(numbers, ratios, marker="o", label=f"keel / {server}")
        axes[0][column].set_title(f"{cell}: requests/s per round")
        axes[0][column].set_ylim(bottom=0)
        axes[1][column].set_title(f"{cell}: keel / peer, same round")
        axes[1][column].axhline(1.0, color="grey", linewidth=0.8)
        axes[1][column].set_xlabel("round (contenders alternate within a round)")
        axes[1][column].set_xticks(range(1, len(keel_rounds) + 1))
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(f"keel.http benchmark: wrk -t1 -c{data.get('connections')}, "
                    f"{data.get('duration')} s per cell, {data.get('rounds')} rounds")
    figure.tight_layout()
    figure.savefig(output, dpi=DPI)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path", type=Path)
    parser.add_argument("png_path", type=Path)
    arguments = parser.parse_args()
    plot(load(arguments.json_path), arguments.png_path)
    print(f"wrote {arguments.png_path}")


if __name__ == "__main__":
    main()
