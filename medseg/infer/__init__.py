"""Network building, weight loading and sliding-window inference (torch is imported lazily by submodules)."""
