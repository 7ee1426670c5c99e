"""Prompt expansion: rewrite a short prompt into the detailed prose GLM-Image does best with, through any
OpenAI-compatible chat-completions endpoint (vLLM, Ollama, Z.ai's API...).

The rewrite must keep every quoted text of the user's prompt verbatim: that is the text GLM-Image will
render. A rewrite that drops or alters one is discarded, as is any failure; the original prompt is then
used and the reason is returned for the job's log.
"""

from __future__ import annotations

import httpx

from ..core.request import quoted_texts

SYSTEM_PROMPT = """\
You turn a user's short image request into one prompt for GLM-Image, a text-to-image model that renders \
text inside images exactly as quoted.

Write the prompt as flowing descriptive prose in a single paragraph, never a list: the main subject \
first, then its setting, composition and camera or viewpoint, lighting, colours and materials, and end \
by stating the visual style (photograph, poster, watercolour, 3D render, flat illustration...). Keep \
every name, brand and number the user gave.

Text to appear in the image is the most important part. Every piece of text the user put in quotes \
must appear in your prompt inside double quotes, character for character: same spelling, case, \
punctuation and language, never translated or corrected. Say where each text sits and what it looks \
like (a shop sign, a poster headline, a label; its font, colour and size). Add no text to render that \
the user did not ask for.

Write in the language of the user's request: Chinese for a Chinese request, English otherwise. Keep it \
under 200 words. For an edit of a given image, describe the change the user asked for and keep the rest \
of the image as it is. Reply with the prompt alone, no preamble and no quotes around the whole prompt."""


class PromptExpander:
    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)
        self.timeout_s = timeout_s

    def expand(self, prompt: str) -> tuple[str, str]:
        """(the prompt to use, a log line saying what happened)."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        try:
            response = self.client.post(
                self.url, json={"model": self.model, "messages": messages, "temperature": 0.7}
            )
            response.raise_for_status()
            rewrite = response.json()["choices"][0]["message"]["content"].strip()
        except httpx.TimeoutException:
            why = f"timed out after {self.timeout_s:g} s"
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            why = f"failed ({type(exc).__name__}: {exc})"
        else:
            missing = [text for text in quoted_texts(prompt) if text not in rewrite]
            if not rewrite:
                why = "returned nothing"
            elif missing:
                why = f"dropped the quoted text {missing[0]!r}"
            else:
                return rewrite, f"Prompt expanded by {self.model}: {rewrite}"
        return prompt, f"Prompt expansion {why}; the prompt was used as given"
