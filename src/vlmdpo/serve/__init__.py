"""`vlmdpo serve`: an OpenAI-compatible endpoint (chat completions with images) over the one model loader.

- `schema`: request body -> ChatRequest, or ApiError in OpenAI's error shape naming the field;
- `media`: the request's images (data URIs; URLs and local paths only where the server allows them);
- `engine`: the bounded queue, batching, and transformers generation (`rows`: per-row streaming / stopping);
- `registry`: the served models; adapters over one base share it;
- `app`: the routes; `server`: uvicorn, the bind check; `cli_args`: the command's arguments;
- `vllm_engine`: the same routes on vLLM (GPU).
Nothing is imported here, so `vlmdpo --help` stays light.
"""
