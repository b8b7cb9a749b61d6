"""Training, on a stock PyTorch box (torch, torchvision, numpy, pyarrow, pillow).

- `run`: the run behind ``python -m ssl.train`` (flags, checks, run folder, resume, DDP);
- `loop`: the loop (`fit`) and the `Objective` protocol it trains;
- `objective`: the protocol's implementations: image encoders (one framework, optionally with
  SP) and CSP's location encoder against a locked image encoder;
- `frameworks`: the one registry of frameworks (every list of them derives from it);
- `models`, `heads`, `location`, `state`: backbones and encoders, the heads on them, CSP's
  location encoders, the momentum targets / queue / centre some frameworks keep;
- `features`: pooled features of full frames (evaluation and embed use them);
- `runlog`, `runfolder`: checkpoints, metrics and stop signals; the run folder's rules.
The losses are pure functions in `objectives/`.
"""
