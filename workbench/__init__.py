"""Meta-Learning Workbench: MAML, Meta-LSTM and ProtoNet with a run catalog and a desktop app."""

__version__ = "0.1.0"
