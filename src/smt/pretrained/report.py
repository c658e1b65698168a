"""What a component load did: every parameter is either loaded (from where) or initialised (why)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LoadReport:
    """loaded: our parameter -> its source tensor; initialised: our parameter -> why it is new;
    skipped: source tensor -> why it was not used; embedding: where the token embedding came from."""

    embedding: str = "none"
    loaded: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, verbose: bool = False) -> str:
        """Loaded tensors counted per part (each one listed when verbose); new and unused ones listed."""
        lines = [f"token embedding from: {self.embedding}", f"loaded {len(self.loaded)} tensors:"]
        if verbose:
            lines += [f"  {target} <- {source}" for target, source in self.loaded.items()]
        else:
            lines += [f"  {part}: {count} tensor{'' if count == 1 else 's'} from {origin}"
                      for (part, origin), count in self._loaded_by_part().items()]
        lines.append(f"newly initialised {len(self.initialised)}:")
        lines += [f"  {target}: {why}" for target, why in self.initialised.items()]
        if self.skipped:
            lines.append(f"not used from the sources {len(self.skipped)}:")
            lines += [f"  {source}: {why}" for source, why in self.skipped.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _loaded_by_part(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for target, source in self.loaded.items():
            key = (target.split(".")[0], source.split(":")[0])
            counts[key] = counts.get(key, 0) + 1
        return counts
