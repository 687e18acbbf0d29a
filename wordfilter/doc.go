// Package wordfilter masks unwanted words in chat texts.
//
// A Filter holds a word list compiled into one Aho-Corasick automaton, so
// masking a text costs one pass over it however long the list is. Every
// occurrence of every listed word is masked, overlapping and adjacent ones
// included: each rune of the text that lies inside an occurrence becomes
// one '*'. Words match anywhere, inside longer words too (Chinese has no
// word boundaries to respect).
//
// Matching ignores case and width. Both the list and the text are compared
// after Fold, which maps rune to rune, so a match in the folded text maps
// back onto runes of the original and every rune outside a match is kept
// exactly as it was sent: with the word "bad", "ＢＡＤ day" becomes
// "*** day".
//
// A Filter is immutable once built and safe for concurrent use. A nil
// *Filter is valid and masks nothing, so a node can run without a list.
package wordfilter
