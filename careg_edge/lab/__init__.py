"""The lab: evaluation protocol, metrics and reports, registration training, synthetic categories (never imported by the product)."""
