"""Running SRCNN on luma: the `Upscaler` contract and its eager CPU/GPU implementation with tiles (`base`), the CPU
precision plans (`precision`), torch.compile (`compiled`), TensorRT (`tensorrt`), the GPU frame pipeline
(`gpu`), the backend choice with its fallback chain (`chain`: `make_upscaler`) and the self-ensemble (`ensemble`).
No backend imports `chain`."""
