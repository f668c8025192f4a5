"""Building trainer.yml from labelled photos (``edged-train``) and measuring it."""
