"""embalance: does synthetic minority augmentation in embedding space help imbalanced text classification?"""

from __future__ import annotations

__version__ = "0.1.0"
