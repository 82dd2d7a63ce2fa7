"""Write docs/settings.md from the settings' own metadata (devise.config.TrainConfig).

Usage: python tools/settings_doc.py
"""

from pathlib import Path

from devise.config import settings_markdown

if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    path.write_text(settings_markdown())
    print(path)
