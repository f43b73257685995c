"""Train a tiny GPT-2 on synthetic tokens with accelerate: no downloads, runs on CPU or GPU, one or many hosts.

SageMaker (and `smimg local run`) hands over hyperparameters as arguments and folders as SM_* variables.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from accelerate import Accelerator
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=8)
    args, _ = parser.parse_known_args()

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model, optimizer = accelerator.prepare(model, optimizer)

    # A learnable pattern: each sequence counts up from a random start, modulo the vocabulary.
    generator = torch.Generator().manual_seed(accelerator.process_index)
    for step in range(1, args.steps + 1):
        start = torch.randint(0, config.vocab_size, (args.batch_size, 1), generator=generator)
        tokens = ((start + torch.arange(config.n_positions)) % config.vocab_size).to(accelerator.device)
        loss = model(input_ids=tokens, labels=tokens).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if step % 5 == 0 or step == args.steps:
            mean = accelerator.gather(loss.detach().reshape(1)).mean().item()
            accelerator.print(f"step {step}/{args.steps} loss {mean:.3f} ({accelerator.num_processes} processes)")

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model_dir = os.environ.get("SM_MODEL_DIR", "model")
        accelerator.unwrap_model(model).save_pretrained(model_dir)
        with open(os.path.join(model_dir, "training.json"), "w") as f:
            json.dump({"steps": args.steps, "final_loss": mean, "processes": accelerator.num_processes}, f)
        accelerator.print(f"saved the model to {model_dir}")


if __name__ == "__main__":
    main()
