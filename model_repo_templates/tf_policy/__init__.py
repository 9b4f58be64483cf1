"""Routing and response-cache policy for the `llm` entry model.

Plain modules with no tritonforge imports: this package is copied verbatim into the emitted model
as ``llm/1/tf_policy`` and runs inside a stock Triton container. Only stdlib, numpy and optional
third-party packages (redis, sentence-transformers/transformers, hnswlib, tokenizers) are used, each
imported lazily where it is needed and degraded around when it is missing.
"""

from .config import CacheConfig, ConfigError, EntryConfig, RouterConfig, TierConfig, parse_entry_config

__all__ = ["CacheConfig", "ConfigError", "EntryConfig", "RouterConfig", "TierConfig", "parse_entry_config"]
