"""The data engine: sample candidate answers from a model, judge them, and turn the scores into preference pairs.

- `jsonl`: resumable JSON-lines files (one fsynced line per row; a torn last line is dropped on resume);
- `sample`: `vlmdpo sample` -- K answers per prompt from a loaded model or an OpenAI-compatible endpoint;
- `endpoint`: the OpenAI-compatible client `sample` and `judge` use;
- `judge`: `vlmdpo judge` -- candidates -> scores (truth, a model, implicit reward, people's labels);
- `pairs`: `vlmdpo pairs` -- scored candidates -> TRL conversational pairs;
- `iterate`: `vlmdpo iterate` -- rounds of the three above plus training and a held-out evaluation.
"""
