"""The endpoints, one router per family: OpenAI's, llama.cpp's, the web page."""
