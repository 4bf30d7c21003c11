"""Your own training loop in the workbench's catalog: a small sine regressor, trained with a
plain PyTorch loop and recorded by `workbench.track` (README: "Track your own scripts").

    python track_sine.py [--steps 300] [--db experiments.db]

Its run appears in `workbench runs` and live in the app, beside the built-in runs.
"""

from __future__ import annotations

import argparse
import time

import torch

import workbench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--db", help="catalog (default: $WORKBENCH_DB or ./experiments.db)")
    p.add_argument("--name", default="")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per step (to watch it live)")
    p.add_argument("--fail-at", type=int, help="raise an error at this step (to see a failed run)")
    args = p.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 1))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    config = {"model": "mlp-40", "lr": args.lr, "steps": args.steps, "dataset": "sine"}
    with workbench.track(name=args.name, config=config, db=args.db, tags=["example"],
                         total_steps=args.steps) as run:  # fmt: skip
        for step in range(1, args.steps + 1):
            x = torch.rand(64, 1) * 10 - 5
            loss = torch.nn.functional.mse_loss(model(x), torch.sin(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(step, loss=loss)
            if step == args.fail_at:
                raise RuntimeError(f"loss diverged at step {step}")
            if step % 100 == 0:
                run.checkpoint(model.state_dict(), step)
            time.sleep(args.sleep)
        with torch.no_grad():
            x = torch.linspace(-5, 5, 600).unsqueeze(1)
            errors = (model(x) - torch.sin(x)).pow(2).squeeze(1)
        ci = 1.96 * float(errors.std()) / len(errors) ** 0.5
        run.evaluation("test", mean=float(errors.mean()), ci=ci, episodes=len(errors), metric="mse")
        print(f"run {run.run_id} ({run.name}): test mse {float(errors.mean()):.4f}")


if __name__ == "__main__":
    main()
