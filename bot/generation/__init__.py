"""Generation: the queue, the engines behind it, and model loading.

- `types`: requests, sampling parameters, results and errors (plain data, no torch).
- `base`: the `Engine` interface every engine implements (no torch).
- `queue`: `GenerationQueue`, the one door to the engine: fair, bounded, cancellable.
- `engine`: `TransformersEngine`, a local model one request at a time, and its shared pieces.
- `batched`: `BatchedEngine`, requests waiting together decoded together (the default).
- `continuous`: `ContinuousEngine`, transformers' continuous batching (for GPUs).
- `remote`: `OpenAIEngine`, an OpenAI-compatible server (no torch); images as content parts.
- `dialect`: what each such server reads beyond OpenAI's fields, and which one is there.
- `vision`: `VisionEngine`, a local vision-language model (the vision lane's engine).
- `loader`: `load_model`: the embedded SmolLM2, a Hub id, a local directory or a .gguf file.
- `factory`: `build_engine`, the configured model in the configured engine, and
  `build_vision_engine` for `VISION_MODEL`.
"""
