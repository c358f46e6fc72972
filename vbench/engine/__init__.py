"""Training engine: `trainer` (epoch loop), `hooks` (LR, logging, precise BN, evaluation, results,
checkpoints, TensorBoard), `evaluator` (clip/video accuracy, multi-view test), `checkpoint`,
`distributed` and `launch` (processes, entry points), `optimizer` and `lr_policy` (solver),
`meters` and `log`.

Entry points: `vbench.engine.launch.run_net_main`, `train_main`, `test_main`.
"""
