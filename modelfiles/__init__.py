"""What inferplex knows about model files, shared by upload validation in the control
plane (through the probe it runs) and the worker's loaders: Triton model configs and
their inference from an ONNX graph (``config``), the checks that run before a file reaches
a runtime (``safety``), the program verifier (``verify``) and its TorchScript operator
allow-list (``torchscript_ops``). Ground floor: imports ``kserve`` only."""
