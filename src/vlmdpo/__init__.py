"""vlmdpo: align vision-language models with human preferences (DPO and relatives)."""
__version__ = "0.1.0"
