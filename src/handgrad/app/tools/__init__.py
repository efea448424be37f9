"""Chapter 11's practical methodology as tools: monitors during training, the debugging checks of §11.5."""
