"""Python SDK with the public API of Foundry Local's `foundry_local` package.

Apps move between cloud and local by changing a base URL:

    manager = FoundryLocalManager("qwen2.5-0.5b")
    client = openai.OpenAI(base_url=manager.endpoint, api_key=manager.api_key)
"""

from foundry_local.api import FoundryLocalManager
from foundry_local.models import DeviceType, FoundryModelInfo

__all__ = ["DeviceType", "FoundryLocalManager", "FoundryModelInfo"]
__version__ = "0.1.0"
