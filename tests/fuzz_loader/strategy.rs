//! proptest strategies for the loader fuzz target: which image to start
//! from, and which mutations to apply to it.

use super::image::{
    Context, ElfSpec, EntrySpec, Field, FlatSpec, MultibootField, Mutation, Place, ProgramField,
    SegmentSpec, Value,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// Addresses and sizes where off-by-one and overflow bugs live.
pub const BOUNDARIES: &[u32] = &[
    0,
    1,
    2,
    3,
    4,
    0x20,
    0x34,
    0xfff,
    0x1000,
    0x1001,
    0x2000,
    0x8fff,
    0x9000,
    0x9004,
    0x94ff,
    0x9500,
    0x9558,
    0x9fbff,
    0x9fc00,
    0xa0000,
    0xf0000,
    0xfffff,
    0x10_0000,
    0x10_0004,
    0x10_000c,
    0x10_1000,
    0x1f_ffff,
    0x20_0000,
    0x40_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xc000_0000,
    0xc010_0000,
    0xffff_f000,
    0xffff_fffc,
    0xffff_fffe,
    0xffff_ffff,
    0x1bad_b002,
];

/// Where a generated case starts.
#[derive(Clone, Debug)]
pub enum Base {
    /// A synthetic ELF image.
    Elf(ElfSpec),
    /// A synthetic flat image (flag bit 16).
    Flat(FlatSpec),
    /// A real guest or a corpus file.
    Seed(Index),
}

/// One generated loader input.
#[derive(Clone, Debug)]
pub struct LoaderCase {
    /// The starting image.
    pub base: Base,
    /// Changes applied to it, in order.
    pub mutations: Vec<Mutation>,
    /// Index into the RAM sizes.
    pub ram: usize,
    /// Index into the appended command lines.
    pub append: usize,
}

fn delta() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => -4i32..=4,
        1 => select(&[-0x1000, 0x1000, -0x10_0000, 0x10_0000, i32::MIN, i32::MAX][..]),
        1 => any::<i32>(),
    ]
}

fn program_field() -> impl Strategy<Value = ProgramField> {
    select(
        &[
            ProgramField::Type,
            ProgramField::Offset,
            ProgramField::Vaddr,
            ProgramField::Paddr,
            ProgramField::Filesz,
            ProgramField::Memsz,
            ProgramField::Flags,
        ][..],
    )
}

fn multiboot_field() -> impl Strategy<Value = MultibootField> {
    select(
        &[
            MultibootField::Flags,
            MultibootField::Checksum,
            MultibootField::HeaderAddr,
            MultibootField::LoadAddr,
            MultibootField::LoadEndAddr,
            MultibootField::BssEndAddr,
            MultibootField::EntryAddr,
        ][..],
    )
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        1 => select(
            &[
                Field::Class,
                Field::Data,
                Field::Type,
                Field::Machine,
                Field::Entry,
                Field::Phoff,
                Field::Phentsize,
                Field::Phnum,
            ][..]
        ),
        3 => (0u8..4, program_field()).prop_map(|(index, field)| Field::Program(index, field)),
        3 => multiboot_field().prop_map(Field::Multiboot),
    ]
}

/// Mostly flags the loader honours, so that the image gets past the header.
fn flags_value() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => select(&[0u32, 1, 2, 3, 0x1_0000, 0x1_0001, 0x1_0002, 0x1_0003, 0x10_0003][..]),
        1 => select(&[4u32, 7, 0x8000, 0x1_0007, 0xffff_ffff][..]),
        1 => any::<u32>(),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => select(BOUNDARIES).prop_map(Value::Const),
        1 => any::<u32>().prop_map(Value::Const),
        2 => delta().prop_map(Value::RamEnd),
        1 => delta().prop_map(Value::ImageLen),
        2 => delta().prop_map(Value::Add),
        2 => (field(), delta()).prop_map(|(field, delta)| Value::Field(field, delta)),
    ]
}

/// A value for the field being set: flags get flag-shaped values.
fn assignment() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (field(), value()).prop_map(|(field, value)| Mutation::Set(field, value)),
        1 => flags_value().prop_map(|flags| Mutation::Set(
            Field::Multiboot(MultibootField::Flags),
            Value::Const(flags)
        )),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => assignment(),
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        1 => (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(from, to, len)| Mutation::Copy { from, to, len }),
        1 => (any::<Index>(), flags_value(), vec(value(), 5))
            .prop_map(|(at, flags, addresses)| Mutation::AddHeader { at, flags, addresses }),
    ]
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        3 => select(&[0x10_0000u32, 0x10_1000, 0x20_0000, 0x1000, 0x1_0000, 0xa000, 0][..])
            .prop_map(Place::At),
        1 => select(BOUNDARIES).prop_map(Place::At),
        1 => prop_oneof![0x8ff0u32..0x9010, 0x9550u32..0x95a0, 0x9_fbf0u32..0x9_fc10].prop_map(Place::At),
        2 => (-0x2000i32..=0).prop_map(Place::RamEnd),
        3 => prop_oneof![Just(0i32), -2i32..=2, 1i32..0x2000].prop_map(Place::AfterPrevious),
        2 => prop_oneof![
            select(&[0x9000u32, 0x9001, 0x9_fc00, 0x9_fc01, 0x10_0000, 0][..]),
            select(BOUNDARIES),
        ]
        .prop_map(Place::EndAt),
        2 => (-2i32..=2).prop_map(Place::EndAtRamEnd),
    ]
}

fn bss() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(0u32),
        2 => 0u32..0x100,
        1 => select(&[0x1000u32, 0x10_0000, 0xffff_ffc0, 0xffff_ffff][..]),
    ]
}

fn segment() -> impl Strategy<Value = SegmentSpec> {
    (
        prop_oneof![6 => Just(1u32), 1 => select(&[0u32, 2, 4, 6, 0x6474_e551][..])],
        place(),
        prop::bool::weighted(0.25),
        vec(any::<u8>(), 0..48),
        bss(),
        prop_oneof![3 => Just(5u32), 1 => select(&[4u32, 6, 7, 0][..])],
    )
        .prop_map(|(kind, place, higher_half, data, bss, flags)| SegmentSpec {
            kind,
            place,
            higher_half,
            data,
            bss,
            flags,
        })
}

fn elf_spec() -> impl Strategy<Value = ElfSpec> {
    (
        vec(segment(), 0..5),
        prop_oneof![
            4 => (any::<Index>(), prop_oneof![0u32..16, any::<u32>()])
                .prop_map(|(which, offset)| EntrySpec::InSegment(which, offset)),
            1 => select(BOUNDARIES).prop_map(EntrySpec::At),
        ],
        select(&[3u32, 0, 1, 2, 1 << 20, 0x8000_0003][..]),
    )
        .prop_map(|(segments, entry, flags)| ElfSpec {
            segments,
            entry,
            flags,
        })
}

fn flat_spec() -> impl Strategy<Value = FlatSpec> {
    (
        (
            0u8..32,
            prop_oneof![3 => 0u32..0x90, 1 => select(BOUNDARIES)],
        ),
        place(),
        vec(any::<u8>(), 0..64),
        prop::option::weighted(0.5, prop_oneof![3 => 0u32..0x100, 1 => select(BOUNDARIES)]),
        prop::option::weighted(0.5, bss()),
        prop_oneof![4 => 0u32..0x80, 1 => select(BOUNDARIES)],
        select(&[0u32, 1, 2, 3][..]),
    )
        .prop_map(
            |((pad_words, header_to_load), load_addr, body, load_len, bss, entry_offset, flags)| {
                FlatSpec {
                    pad_words,
                    header_to_load,
                    load_addr,
                    body,
                    load_len,
                    bss,
                    entry_offset,
                    flags,
                }
            },
        )
}

/// Generated loader inputs for a machine with `rams` RAM sizes and
/// `appends` command lines.
pub fn loader_case(rams: usize, appends: usize) -> impl Strategy<Value = LoaderCase> {
    let base = prop_oneof![
        3 => elf_spec().prop_map(Base::Elf),
        2 => flat_spec().prop_map(Base::Flat),
        3 => any::<Index>().prop_map(Base::Seed),
    ];
    let mutations = prop_oneof![1 => Just(Vec::new()), 3 => vec(mutation(), 1..4)];
    (base, mutations, 0..rams, 0..appends).prop_map(|(base, mutations, ram, append)| LoaderCase {
        base,
        mutations,
        ram,
        append,
    })
}

impl LoaderCase {
    /// The starting image from `seeds`, mutated.
    pub fn build(&self, seeds: &[Vec<u8>], context: Context) -> super::image::Built {
        let mut built = match &self.base {
            Base::Elf(spec) => spec.build(context),
            Base::Flat(spec) => spec.build(context),
            Base::Seed(which) => super::image::Built {
                image: seeds[which.index(seeds.len())].clone(),
                expectation: super::model::Expectation::Unknown,
            },
        };
        if !self.mutations.is_empty() {
            built.expectation = super::model::Expectation::Unknown;
        }
        for mutation in &self.mutations {
            mutation.apply(&mut built.image, context);
        }
        built
    }
}
