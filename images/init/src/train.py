"""Example training script: runs unchanged on 1 CPU, 8 GPUs or 16 nodes (smimg's entrypoint starts torchrun)."""

import argparse
import os

import torch
from accelerate import Accelerator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    accelerator = Accelerator()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    inputs = torch.randn(256, 8)
    targets = inputs.sum(dim=1, keepdim=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    for epoch in range(args.epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs.to(accelerator.device)), targets.to(accelerator.device))
        accelerator.backward(loss)
        optimizer.step()
        accelerator.print(f"epoch {epoch} loss {loss.item():.4f} world {accelerator.num_processes}")
    if accelerator.is_main_process:
        model_dir = os.environ.get("SM_MODEL_DIR", "model")
        os.makedirs(model_dir, exist_ok=True)
        torch.save(accelerator.unwrap_model(model).state_dict(), os.path.join(model_dir, "model.pt"))


if __name__ == "__main__":
    main()
