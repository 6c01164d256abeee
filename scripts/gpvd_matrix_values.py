"""The joint values QMIX and GPVD learn on the GPVD matrix game (the paper's Fig. 3), one seed each.

Trains ``qmix_pymarl2`` and ``gpvd`` for 20k steps under uniform exploration (the protocol of
``docs/algorithms/gpvd.md``) and prints each agent's utilities and ``Q_tot`` for every joint action
(rows agent B = index 1, columns agent A = index 0, as the paper's figure).

    python scripts/gpvd_matrix_values.py
"""

import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import make_config
from marlopt.runners.off_policy import OffPolicyRunner
from marlopt.logger import RunLogger
for algo in ("qmix_pymarl2", "gpvd"):
    cfg = make_config(f"algo={algo}", "env=games", "map=gpvd_matrix", "algo.epsilon_start=1", "algo.epsilon_finish=1",
                      "total_steps=20000", "seed=0", "eval_episodes=4", "torch_threads=1")
    run = Path(f"runs/gpvd_matrix_values/{algo}")
    run.mkdir(parents=True, exist_ok=True)
    r = OffPolicyRunner(cfg, run)
    lg = RunLogger(run, r.total_frames, progress=False, tensorboard=False)
    r.train(lg)
    lg.close()
    with torch.no_grad():
        q, _ = r.rule.agent(torch.ones(1, 1, 2, 1), None if not r.rule.agent.last_action else torch.full((1,1,2),-1), None)
        q = q[0, 0]  # [N, A]
        tab = np.zeros((3, 3))
        for a0, a1 in itertools.product(range(3), repeat=2):  # rows agent B (index 1), cols agent A (index 0)
            tab[a1, a0] = float(r.rule.mixer(torch.stack([q[0, a0], q[1, a1]])[None], torch.ones(1, 1))[0])
    print(algo, "Q_A", q[0].numpy().round(3), "Q_B", q[1].numpy().round(3))
    print(np.array2string(tab, precision=3))
