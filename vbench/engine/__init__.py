"""Training engine: `trainer` (epoch loop), `hooks` (LR, logging, precise BN, evaluation, results,
checkpoints, TensorBoard), `evaluator` (clip/video accuracy, multi-view test), `checkpoint`,
`distributed` and `launch` (processes, entry points), `optimizer` and `lr_policy` (solver),
`meters` and `log`.

Entry point: `vbench.engine.launch.launch(cfg)`; the commands are in `vbench.cli`.
"""
