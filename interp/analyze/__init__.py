"""Analyzers: what the heads do (retrieval, sinks, binding, saliency agreement, classic head types)
and the trial runners they share."""
