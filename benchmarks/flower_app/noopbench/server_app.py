"""The ServerApp: FedAvg over every SuperNode for N rounds, recording when each round began and
ended (configure_train to aggregate_train) in a JSON file the benchmark reads."""

import json
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    """FedAvg that notes each round's start and end (wall clock, seconds)."""

    def __init__(self, path: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.rounds: list[dict[str, float]] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.rounds.append({"round": server_round, "start": time.time()})
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        result = super().aggregate_train(server_round, replies)
        self.rounds[-1]["end"] = time.time()
        if self.path:
            with open(self.path, "w") as out:
                json.dump(self.rounds, out)
        return result


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    nodes = int(config["num-supernodes"])
    floats = int(config["floats"])
    # An MLP-like layout of about `floats` float32 values (hierfl's benchmark model is 64-1333-10).
    hidden = max(1, (floats - 10) // 75)
    arrays = ArrayRecord([np.zeros((hidden, 64), np.float32), np.zeros(hidden, np.float32),
                          np.zeros((10, hidden), np.float32), np.zeros(10, np.float32)])
    strategy = TimedFedAvg(str(config["timings-file"]), fraction_train=1.0,
                           fraction_evaluate=0.0, min_train_nodes=nodes,
                           min_available_nodes=nodes)
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=int(config["num-server-rounds"]))
