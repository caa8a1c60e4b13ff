//! QEMU's key names (QAPI `QKeyCode`) as the key numbers its HID
//! emulation takes: the PC scancode (set 1), with 0x80 added for keys
//! sent after an 0xe0 prefix (QEMU's `qemu_input_key_value_to_number`).

/// `(qcode, number)` for the keys a PC keyboard has.
const QCODES: &[(&str, u8)] = &[
    ("esc", 0x01),
    ("1", 0x02),
    ("2", 0x03),
    ("3", 0x04),
    ("4", 0x05),
    ("5", 0x06),
    ("6", 0x07),
    ("7", 0x08),
    ("8", 0x09),
    ("9", 0x0a),
    ("0", 0x0b),
    ("minus", 0x0c),
    ("equal", 0x0d),
    ("backspace", 0x0e),
    ("tab", 0x0f),
    ("q", 0x10),
    ("w", 0x11),
    ("e", 0x12),
    ("r", 0x13),
    ("t", 0x14),
    ("y", 0x15),
    ("u", 0x16),
    ("i", 0x17),
    ("o", 0x18),
    ("p", 0x19),
    ("bracket_left", 0x1a),
    ("bracket_right", 0x1b),
    ("ret", 0x1c),
    ("ctrl", 0x1d),
    ("a", 0x1e),
    ("s", 0x1f),
    ("d", 0x20),
    ("f", 0x21),
    ("g", 0x22),
    ("h", 0x23),
    ("j", 0x24),
    ("k", 0x25),
    ("l", 0x26),
    ("semicolon", 0x27),
    ("apostrophe", 0x28),
    ("grave_accent", 0x29),
    ("shift", 0x2a),
    ("backslash", 0x2b),
    ("z", 0x2c),
    ("x", 0x2d),
    ("c", 0x2e),
    ("v", 0x2f),
    ("b", 0x30),
    ("n", 0x31),
    ("m", 0x32),
    ("comma", 0x33),
    ("dot", 0x34),
    ("slash", 0x35),
    ("shift_r", 0x36),
    ("kp_multiply", 0x37),
    ("asterisk", 0x37),
    ("alt", 0x38),
    ("spc", 0x39),
    ("caps_lock", 0x3a),
    ("f1", 0x3b),
    ("f2", 0x3c),
    ("f3", 0x3d),
    ("f4", 0x3e),
    ("f5", 0x3f),
    ("f6", 0x40),
    ("f7", 0x41),
    ("f8", 0x42),
    ("f9", 0x43),
    ("f10", 0x44),
    ("num_lock", 0x45),
    ("scroll_lock", 0x46),
    ("kp_7", 0x47),
    ("kp_8", 0x48),
    ("kp_9", 0x49),
    ("kp_subtract", 0x4a),
    ("kp_4", 0x4b),
    ("kp_5", 0x4c),
    ("kp_6", 0x4d),
    ("kp_add", 0x4e),
    ("kp_1", 0x4f),
    ("kp_2", 0x50),
    ("kp_3", 0x51),
    ("kp_0", 0x52),
    ("kp_decimal", 0x53),
    ("less", 0x56),
    ("f11", 0x57),
    ("f12", 0x58),
    ("kp_enter", 0x9c),
    ("ctrl_r", 0x9d),
    ("kp_divide", 0xb5),
    ("print", 0xb7),
    ("sysrq", 0xb7),
    ("alt_r", 0xb8),
    ("home", 0xc7),
    ("up", 0xc8),
    ("pgup", 0xc9),
    ("left", 0xcb),
    ("right", 0xcd),
    ("end", 0xcf),
    ("down", 0xd0),
    ("pgdn", 0xd1),
    ("insert", 0xd2),
    ("delete", 0xd3),
    ("meta_l", 0xdb),
    ("meta_r", 0xdc),
    ("menu", 0xdd),
    ("compose", 0xdd),
];

/// The key number of QEMU key name `qcode`, if vmkit knows the key
/// (`pause` is not a number: it is a sequence of its own).
pub fn qcode_number(qcode: &str) -> Option<u8> {
    QCODES.iter().find(|(name, _)| *name == qcode).map(|&(_, n)| n)
}

/// The key names vmkit knows, in scancode order (and `pause`).
pub fn qcodes() -> impl Iterator<Item = &'static str> {
    QCODES.iter().map(|&(name, _)| name).chain(std::iter::once("pause"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcodes_map_to_set_one_scancodes() {
        assert_eq!(qcode_number("a"), Some(0x1e));
        assert_eq!(qcode_number("up"), Some(0xc8));
        assert_eq!(qcode_number("nope"), None);
        assert!(qcodes().any(|q| q == "pause"));
    }
}
