"""The producer: price sources and the publisher that writes them into Redis."""
