"""Abuse, spam and sentiment scores for one chat message: lexicons and heuristics.

* sentiment: VADER's compound score (the ``vaderSentiment`` package, whose lexicon ships
  inside it), -1 (negative) to 1 (positive).
* abuse: words of better-profanity's word list (shipped inside that package), each given
  a weight by the tier this module puts it in (slur, insult, profanity, other), minus the
  entries that are not abuse in a chat (identity terms, anatomy, drugs, everyday words:
  EXCLUDED below), plus a few insults and threats of our own. Weights combine as a
  noisy-OR, then a message aimed at someone ("you", "@name") counts more, and more again
  when its tone is negative; a positive tone discounts mild words.
* spam: transparent heuristics (links, promotional phrases, runs of one character,
  shouting, a few words repeated), combined as a noisy-OR.

English only, per message, no context: see README.md for what that misses.
Nothing here logs or keeps the text.
"""

from __future__ import annotations

import importlib.resources
import math
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Final

import better_profanity  # type: ignore[import-untyped]
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]

MODEL_NAMES: Final = (
    "moderation.vader",
    "moderation.profanity_lexicon",
    "moderation.spam_heuristics",
)

MAX_TEXT_CHARS: Final = 10_000
# VADER is given at most this many words at a time (see Moderator.sentiment).
VADER_CHUNK_WORDS: Final = 100
# VADER's normalisation constant: compound = s / sqrt(s^2 + alpha).
VADER_ALPHA: Final = 15.0
ABUSE_FLAG: Final = 0.5
SPAM_FLAG: Final = 0.8

# --- abuse ---------------------------------------------------------------------------

SLUR: Final = "slur"
THREAT: Final = "threat"
INSULT: Final = "insult"
PROFANITY: Final = "profanity"
OTHER: Final = "lexicon_other"

TIER_WEIGHTS: Final[dict[str, float]] = {
    SLUR: 0.9,
    THREAT: 0.9,
    INSULT: 0.45,
    PROFANITY: 0.25,
    OTHER: 0.15,
}
# Tiers that no positive tone discounts.
SEVERE_TIERS: Final = frozenset({SLUR, THREAT})

# Applied as noisy-OR terms once at least one word was found.
DIRECTED_BOOST: Final = 0.25  # the message addresses someone
NEGATIVE_TONE_BOOST: Final = 0.2  # ... and VADER finds it negative
NEGATIVE_TONE: Final = -0.4
POSITIVE_TONE: Final = 0.5
POSITIVE_TONE_FACTOR: Final = 0.6  # abuse (of mild words only) times this

# Words in normalised form (lower case, letters only, leetspeak undone: see _norm_word).
SLURS: Final = frozenset(
    """
    nigger niggers nigga niggas niggaz niggah nig nigg nigglet niglet
    faggot faggots faggit faggitt fagot fagots fag fags fagg faggs fagged fagging
    kike kikes kyke chink chinks gook gooks spic spick spik spiks wetback wetbacks
    coon coons dyke dykes tranny trannies retard retards retarded reetard ritard rtard tard
    paki pakis wigger wiggers heeb hebe injun polack kraut wop jap japs moolie shemale
    towelhead raghead beaner beaners
    """.split()
)

THREATS: Final = frozenset({"kys"})

INSULTS: Final = frozenset(
    """
    bitch bitches bastard bastards asshole assholes arsehole arseholes asswhole
    dickhead dickheads dumbass dumbasses dumass jackass jackhole moron morons stupid
    idiot idiots idiotic imbecile imbeciles cretin cretins loser losers scum scumbag
    scumbags dipshit dimwit halfwit nitwit twat twats twathead twatty twunt twunter
    wanker wankers tosser tossers prick pricks cunt cunts whore whores slut sluts skank
    skanks douche douchebag douchebags douchey fuckface fuckhead fuckheads fucktard
    fuckwit fuckwhit fukwit fukwhit fucknut fuckup shithead shitface shitdick cocksucker
    cocksuckers motherfucker motherfuckers mothafucka mothafucker mothafuckers
    mutherfucker muthafucker knobhead knobend bellend nobhead numbnuts jerk bimbo bimbos
    stfu gfy foad inbred honky pillowbiter
    """.split()
)

PROFANITIES: Final = frozenset(
    """
    fuck fucks fucked fucker fuckers fucking fuckin fuckings fuk fuks fuker fukker
    fukkin fukking fcuk fcuker fcuking fvck fxck fook fooker phuck phuk phuked phuking
    phukked phukking phuks phuq feck fecker fuckoff fuckme shit shits shitty shite
    shitted shitting shitter bullshit crap crappy damn damned dammit goddamn goddamned
    goddam goddammit godamn godamnit hell piss pissed pissing pisses pissoff arse ass
    wtf bollocks bugger
    """.split()
)

# Phrases, in normalised words: (words, tier).
PHRASES: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("kill", "yourself"), THREAT),
    (("kill", "urself"), THREAT),
    (("kill", "ur", "self"), THREAT),
    (("go", "die"), THREAT),
    (("hope", "you", "die"), THREAT),
    (("i", "will", "kill", "you"), THREAT),
    (("ill", "kill", "you"), THREAT),
    (("piece", "of", "shit"), INSULT),
    (("son", "of", "a", "bitch"), INSULT),
    (("shut", "up"), PROFANITY),
)

# Entries of better-profanity's list that are not abuse in a chat message: identity
# terms (flagging them would flag the people they name), anatomy and health, drugs and
# drink, violence words used in ordinary talk ("kill the process"), and everyday words
# or names the list happens to hold.
EXCLUDED: Final = frozenset(
    """
    gay gays gai gae gey ghay ghey lesbians queer queers transsexual homoerotic
    arian aryan asanchez len god hitler nazism reich
    hiv herpes herpy herp drunk fat ugly kill murder sniper napalm uzi
    meth opiate opium pcp peyote pot reefer weed ganja hemp heroin hookah hooch hootch
    valium vodka rum toke stoned junkie junky extacy extasy
    organ ovary ovum ovums uterus womb menses menstruate menstruation tampon urinal
    urine vomit virgin naked nude breasts anus penis vagina vulva clitoris scrotum
    foreskin testicle testical testis testes teste testee glans gonad gonads hymen
    nipple nipples pubic pubis rectal rectum rectus penile penial semen sperm
    omg lmao lmfao foobar fubar doofus dopey dummy dink dinks erect facial fingering
    flange fondle leper loin loins lust lusting lusty massa maxi nad nads nappy niggle
    nimrod ninny oral orally pawn pee peepee penetrate penetration playboy pms poop
    potty prude prig racy revue rump sandbar scantily screw screwed screwing seaman
    seamen seduce sex sexual slave slope snatch snuff souse soused steamy strip stroke
    suck sucked sucking tawdry thrust thug tinkle toots tramp trashy tush undies unwed
    vixen vulgar wad wang wazoo wedgie weenie weirdo whiz willies willy woody xx xxx
    yury cipa gringo guido homey paddy pinko pasty pastie hump humped humping crotch
    cowgirl cowgirls hoar fart sadism sadist masochist enlargement viagra vgra
    teat erotic erotism
    """.split()
)

# Second-person words: the message is aimed at someone.
DIRECTED_WORDS: Final = frozenset("you your youre yours yourself yourselves u ur ya".split())

# Leetspeak, undone only in tokens that also have a letter ("455" stays a number).
_LEET: Final = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "+": "t"}
)
_STRIP: Final = string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026"
_NON_LETTERS: Final = re.compile(r"[^a-z]+")
_HAS_LETTER: Final = re.compile(r"[a-z]")
_RUN3: Final = re.compile(r"(.)\1{2,}")
# Substrings that make a token profanity wherever they stand ("clusterfuck", "fuckingidiot").
PROFANE_STEMS: Final = ("fuck", "shit")


def _fold(text: str) -> str:
    """Lower case, compatibility forms folded, accents dropped ("Ｆück" -> "fuck")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _norm_word(raw: str) -> str:
    """A folded token without surrounding punctuation; if it has a letter, leetspeak
    undone and everything but letters dropped ("f.u.c.k" -> "fuck", "sh!t" -> "shit")."""
    plain = raw.strip(_STRIP)
    if not _HAS_LETTER.search(plain):
        return plain
    return _NON_LETTERS.sub("", plain.translate(_LEET))


def _variants(word: str) -> tuple[str, ...]:
    """The word, and with runs of 3+ of one letter cut to 1 and to 2 ("fuuuck", "asss")."""
    if not _RUN3.search(word):
        return (word,)
    return (word, _RUN3.sub(r"\1", word), _RUN3.sub(r"\1\1", word))


def _bp_wordlist() -> list[str]:
    text = importlib.resources.files(better_profanity).joinpath("profanity_wordlist.txt").read_text("utf-8")
    return [line.strip().casefold() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Lexicon:
    # Entries as written ("s.o.b.", "masterbat*"): matched against a token as typed.
    raw: dict[str, str]
    # Entries in normalised form: matched against a token's normalised variants.
    words: dict[str, str]
    # Multi-word entries, by their first normalised word.
    phrases: dict[str, list[tuple[tuple[str, ...], str]]]


def build_lexicon(wordlist: list[str]) -> Lexicon:
    """The tiers for ``wordlist`` (better-profanity's) and our own words and phrases."""
    raw: dict[str, str] = {}
    words: dict[str, str] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}

    def tier_of(word: str) -> str:
        if word in SLURS:
            return SLUR
        if word in INSULTS:
            return INSULT
        if word in PROFANITIES:
            return PROFANITY
        return OTHER

    def add_phrase(parts: tuple[str, ...], tier: str) -> None:
        phrases.setdefault(parts[0], []).append((parts, tier))

    for entry in wordlist:
        parts = tuple(_norm_word(p) for p in entry.split())
        if len(parts) > 1:
            if all(parts) and not any(p in EXCLUDED for p in parts) and "".join(parts) not in EXCLUDED:
                add_phrase(parts, tier_of("".join(parts)))
            continue
        norm = parts[0] if parts else ""
        if not norm or norm in EXCLUDED:
            continue
        if entry.isalpha() and entry.isascii():
            words[norm] = tier_of(norm)
        else:
            # "s.o.b." must not make "sob" abuse: written forms match only as written,
            # in the tier of the word they spell ("sh!+" and "he11" too).
            spelled = {
                norm,
                _NON_LETTERS.sub("", entry.translate(_LEET)),
                _NON_LETTERS.sub("", entry.replace("1", "l").translate(_LEET)),
            }
            raw[entry] = max((tier_of(w) for w in spelled), key=TIER_WEIGHTS.__getitem__)
    for tier, group in ((SLUR, SLURS), (THREAT, THREATS), (INSULT, INSULTS), (PROFANITY, PROFANITIES)):
        for word in group:
            words[word] = tier
    for parts, tier in PHRASES:
        add_phrase(parts, tier)
    return Lexicon(raw=raw, words=words, phrases=phrases)


# --- spam ------------------------------------------------------------------------------

# Links: a scheme or "www.", or a bare domain with a TLD that chat text rarely has
# otherwise (so "config.toml" and "main.rs" are not links; IP addresses are not either).
# Every pattern here runs in linear time: a message of 10,000 characters such as
# "a.a.a.a..." must not backtrack for seconds (the worker answers one request at a time).
TLDS: Final = frozenset(
    """
    com net org info biz io co xyz top ru cn tk ml ga cf gq ly gl me link click online
    site shop store app live vip win bid loan club icu buzz cc ws su
    """.split()
)
_SCHEME_LINK: Final = re.compile(r"\b(?:[a-z][a-z0-9+.-]{0,31}://|www\.)\S+", re.IGNORECASE)
_DOTTED_RUN: Final = re.compile(r"[a-z0-9][a-z0-9.-]*", re.IGNORECASE)


def _is_domain(run: str) -> bool:
    labels = run.rstrip(".-").lower().split(".")
    return len(labels) >= 2 and labels[-1] in TLDS and all(labels)


def count_links(text: str) -> tuple[int, str]:
    """How many links ``text`` has, and the text without them."""
    count = len(_SCHEME_LINK.findall(text))
    rest = _SCHEME_LINK.sub(" ", text)
    pieces: list[str] = []
    last = 0
    for match in _DOTTED_RUN.finditer(rest):
        if _is_domain(match.group(0)):
            count += 1
            pieces.append(rest[last : match.start()])
            last = match.end()
    pieces.append(rest[last:])
    return count, " ".join(pieces)


# A run of one letter, digit or !?$ (not of -=_*#. which draw lines in plain text).
_CHAR_RUN: Final = re.compile(r"([^\W_]|[!?$])\1{5,}")
_WORD: Final = re.compile(r"[^\W_]+")

PROMO_PHRASES: Final = (
    "click here", "buy now", "order now", "free money", "make money", "earn money",
    "work from home", "limited time", "act now", "100% free", "risk free", "risk-free",
    "no credit check", "double your", "giveaway", "promo code", "discount code",
    "cheap", "viagra", "cialis", "casino", "dm me", "check my profile", "follow me",
    "subscribe to my", "guaranteed", "winner", "you have won", "claim your", "crypto",
    "investment opportunity",
)


def _noisy_or(parts: list[float]) -> float:
    """1 - prod(1 - p): each part alone sets a floor, together they add up towards 1."""
    remaining = 1.0
    for part in parts:
        remaining *= 1.0 - min(max(part, 0.0), 1.0)
    return 1.0 - remaining


@dataclass(frozen=True)
class ModerationResult:
    abuse: float
    spam: float
    sentiment: float
    flagged: bool
    reasons: tuple[str, ...]


class Moderator:
    """The model behind the ``moderation.score`` op; load once, then score()."""

    names: Final = MODEL_NAMES

    def __init__(self, abuse_flag: float = ABUSE_FLAG, spam_flag: float = SPAM_FLAG) -> None:
        self.abuse_flag = abuse_flag
        self.spam_flag = spam_flag
        self._vader = SentimentIntensityAnalyzer()
        # How many words VADER puts in place of each emoji it knows.
        self._emoji_words: dict[str, int] = {
            str(k): len(str(v).split()) for k, v in self._vader.emojis.items() if len(str(k)) == 1
        }
        self.lexicon = build_lexicon(_bp_wordlist())

    def _vader_chunks(self, text: str) -> list[str]:
        """``text`` in pieces of at most VADER_CHUNK_WORDS words as VADER counts them
        (it replaces each emoji by its description), whole words where possible."""
        chunks: list[str] = []
        current: list[str] = []
        cost = 0
        for word in text.split():
            pieces = [word]
            word_cost = 1 + sum(self._emoji_words.get(c, 0) for c in word)
            if word_cost > VADER_CHUNK_WORDS:  # a long run of emoji: cut it up
                step = VADER_CHUNK_WORDS // (1 + max(self._emoji_words.values(), default=1))
                pieces = [word[i : i + step] for i in range(0, len(word), step)]
            for piece in pieces:
                piece_cost = word_cost if len(pieces) == 1 else 1 + sum(self._emoji_words.get(c, 0) for c in piece)
                if current and cost + piece_cost > VADER_CHUNK_WORDS:
                    chunks.append(" ".join(current))
                    current, cost = [], 0
                current.append(piece)
                cost += piece_cost
        if current:
            chunks.append(" ".join(current))
        return chunks

    def sentiment(self, text: str) -> float:
        """VADER's compound score. VADER's time grows with the square of a text's length,
        so a long text is scored in chunks whose raw valence sums are added up and
        normalised as VADER does; a text of one chunk gets exactly VADER's score."""
        chunks = self._vader_chunks(text)
        if not chunks:
            return 0.0
        compounds = [float(self._vader.polarity_scores(chunk)["compound"]) for chunk in chunks]
        if len(compounds) == 1:
            return min(max(compounds[0], -1.0), 1.0)
        # VADER's compound is s / sqrt(s^2 + 15) for the sum s of the valences: invert it
        # for each chunk (VADER rounds to 4 places, so +-1 is clamped), add, normalise.
        total = 0.0
        for c in compounds:
            c = min(max(c, -0.9999), 0.9999)
            total += c * math.sqrt(VADER_ALPHA / (1.0 - c * c))
        return total / math.sqrt(total * total + VADER_ALPHA)

    def abuse(self, folded: str, sentiment: float) -> tuple[float, list[str]]:
        """Abuse score of the folded text and the reasons, given its sentiment."""
        lex = self.lexicon
        tokens = folded.split()
        normed = [_norm_word(t) for t in tokens]
        hits: list[str] = []
        # The words as VADER would know them ("FUUUCK" -> "fuck", "y0u" -> "you").
        clean = list(normed)
        for i, (token, norm) in enumerate(zip(tokens, normed)):
            tier = lex.raw.get(token) or lex.raw.get(token.strip(_STRIP))
            if tier is None and norm and norm not in EXCLUDED:
                found = [(TIER_WEIGHTS[lex.words[v]], lex.words[v], v) for v in _variants(norm) if v in lex.words]
                if found:
                    _, tier, clean[i] = max(found)
                elif any(stem in v for v in _variants(norm) for stem in PROFANE_STEMS):
                    tier = PROFANITY
            if tier is not None:
                hits.append(tier)
        for i, first in enumerate(normed):
            for parts, tier in lex.phrases.get(first, ()):
                if tuple(normed[i : i + len(parts)]) == parts:
                    hits.append(tier)
        if not hits:
            return 0.0, []
        score = _noisy_or([TIER_WEIGHTS[t] for t in hits])
        reasons = [f"abuse.{tier}" for tier in TIER_WEIGHTS if tier in hits]
        directed = any(n in DIRECTED_WORDS for n in normed) or any(t.startswith("@") and len(t) > 1 for t in tokens)
        if directed:
            boosts = [score, DIRECTED_BOOST]
            reasons.append("abuse.directed")
            if sentiment > NEGATIVE_TONE:
                # VADER doesn't read "f.u.c.k y0u" or "ＦＵＵＵＣＫ": the tone of the
                # words as found in the lexicon counts too.
                sentiment = min(sentiment, self.sentiment(" ".join(clean)))
            if sentiment <= NEGATIVE_TONE:
                boosts.append(NEGATIVE_TONE_BOOST)
                reasons.append("abuse.negative_tone")
            score = _noisy_or(boosts)
        if sentiment >= POSITIVE_TONE and not SEVERE_TIERS.intersection(hits):
            score *= POSITIVE_TONE_FACTOR
            reasons.append("abuse.positive_tone_discount")
        return min(score, 1.0), reasons

    def spam(self, text: str, folded: str) -> tuple[float, list[str]]:
        """Spam score of the text (``folded`` is its folded form) and the reasons."""
        parts: list[float] = []
        reasons: list[str] = []
        links, without_links = count_links(text)
        if links:
            parts.append(min(1.0 - 0.7**links, 0.9))
            reasons.append("spam.links")
        promo = sum(folded.count(p) for p in PROMO_PHRASES)
        if promo:
            parts.append(1.0 - 0.65**promo)
            reasons.append("spam.promo_phrases")
        longest_run = max((len(m.group(0)) for m in _CHAR_RUN.finditer(text)), default=0)
        if longest_run >= 6:
            parts.append(0.45 if longest_run >= 12 else 0.25)
            reasons.append("spam.repeated_characters")
        # Shouting is in the words: links (often lower case) are left out of the count.
        letters = [c for c in without_links if c.isalpha()]
        if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) >= 0.75:
            parts.append(0.35)
            reasons.append("spam.shouting")
        words = _WORD.findall(folded)
        if len(words) >= 6:
            distinct = len(Counter(words)) / len(words)
            if distinct <= 0.15:
                parts.append(0.8)
            elif distinct <= 0.3:
                parts.append(0.6)
            elif distinct <= 0.5:
                parts.append(0.35)
            if distinct <= 0.5:
                reasons.append("spam.repetition")
        return _noisy_or(parts), reasons

    def score(self, text: str) -> ModerationResult:
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"text is longer than {MAX_TEXT_CHARS} characters")
        folded = _fold(text)
        sentiment = self.sentiment(text)
        abuse, abuse_reasons = self.abuse(folded, sentiment)
        spam, spam_reasons = self.spam(text, folded)
        for value in (abuse, spam, sentiment):
            if not math.isfinite(value):
                raise ArithmeticError("a moderation score is not finite")
        return ModerationResult(
            abuse=round(abuse, 4),
            spam=round(spam, 4),
            sentiment=round(sentiment, 4),
            flagged=abuse >= self.abuse_flag or spam >= self.spam_flag,
            reasons=tuple(abuse_reasons + spam_reasons),
        )
